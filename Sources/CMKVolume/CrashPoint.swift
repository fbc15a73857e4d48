import Foundation

/// Named places where a crash is most harmful, for crash tests: when `CMKFS_CRASH_POINT` names
/// one, the process exits at once (status 86, no cleanup, like `kill -9`) when it gets there.
/// Unset in production; documented in docs/design-notes.md.
public enum CrashPoint {
    private static let armed = ProcessInfo.processInfo.environment["CMKFS_CRASH_POINT"]

    public static func hit(_ name: String) {
        if armed == name { _exit(86) }
    }
}
