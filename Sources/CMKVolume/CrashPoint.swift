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

/// Named places where a test needs the process to pause, to show that what follows waits for
/// what comes before: when `CMKFS_STALL_POINT` is `NAME:MILLISECONDS`, the process sleeps that
/// long when it gets to NAME. Unset in production; documented in docs/design-notes.md.
public enum StallPoint {
    private static let armed: (name: Substring, milliseconds: UInt32)? = {
        guard let spec = ProcessInfo.processInfo.environment["CMKFS_STALL_POINT"] else { return nil }
        let parts = spec.split(separator: ":")
        guard parts.count == 2, let ms = UInt32(parts[1]) else { return nil }
        return (parts[0], min(ms, 60_000))
    }()

    public static func hit(_ name: String) {
        if let armed, armed.name == name { usleep(armed.milliseconds * 1000) }
    }
}
