import ArgumentParser
import Foundation
import Glibc
import CMKControl
import CMKKeyService
import CMKVolume

/// `cmkfs rekey`: new DEKs and re-encrypted content, for files whose data key may have leaked.
struct RekeyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rekey",
        abstract: "Re-encrypt files under fresh data keys (when a data key may have leaked).",
        discussion: """
        Each file is re-encrypted beside itself and switched in place under a durable journal: a \
        crash leaves the old content or, after the next mount or rekey finishes the journal, the \
        new — never a mix. Mounted, the live mount does the work under the file's lock, so \
        applications with the file open just wait for the switch. Without PATH every file is \
        rekeyed; an interrupted run resumes when started again with the same selection. \
        Example: cmkfs rekey /srv/vol docs/payroll.xlsx
        """
    )
    @Argument(help: "The volume directory.") var volume: String
    @Argument(help: "Files or directories inside the volume, as the mount shows them (default: everything).")
    var paths: [String] = []
    @OptionGroup var access: KeyAccessOptions
    @Flag(help: "Print a JSON summary instead of text.") var json = false

    struct Summary: Codable {
        /// The version of this JSON shape (docs/json.md).
        var format = 1
        var rekeyed: Int
        var resumed: Bool
        var failed: [Failure]
        var seconds: Double
        struct Failure: Codable { var path: String; var error: String }
    }

    func run() {
        reporting { () throws(CMKError) in
            let start = Date()
            let selection = paths.map { "/" + $0.split(separator: "/").joined(separator: "/") }.sorted()
            let pin = try PINSource.forVolume(volume, pinFile: access.pinFile, promptAtTerminal: true)
            let v = try Volume.open(at: volume, kmsDir: access.kmsDir, pin: pin, purpose: "rekey")
            let mounted = MountLock.holder(volumePath: v.path) != nil
            // Offline, hold the mount lock so no mount starts while files are half switched.
            let lock = mounted ? nil : try MountLock.acquire(v, mountpoint: "(cmkfs rekey, pid \(getpid()))")
            defer { withExtendedLifetime(lock) {} }
            let audit = CommandAudit(path: v.path, direct: !mounted) { () throws(CMKError) in try v.openCommandAuditLog() }
            defer { try? audit.close() }
            var bar = ProgressReport("rekeying", unit: "files")
            let report = try v.rekeyFiles(selection: selection, route: mounted ? .mount { Self.rekeyMounted($0, volume: v.path) } : .offline,
                                          audit: audit.sink) { bar.update($0, $1) }
            let failures = report.failed.map { Summary.Failure(path: $0.path, error: $0.error) }
            let summary = Summary(rekeyed: report.rekeyed, resumed: report.resumed, failed: failures, seconds: Date().timeIntervalSince(start))
            if json {
                printJSON(summary)
            } else {
                print("rekeyed \(summary.rekeyed) files" + (summary.resumed ? " (resumed)" : "") + String(format: " in %.2f s", summary.seconds))
                for f in failures { print("failed: \(f.path): \(f.error)") }
            }
            if !failures.isEmpty {
                throw CMKError(.incomplete, "\(failures.count) files were not rekeyed (first: \(failures[0].path): \(failures[0].error))",
                               hint: "fix the cause (key revoked? tampered block?) and run the same command again")
            }
        }
    }

    /// Asks the live mount to rekey `path`; nil on success, else why not.
    static func rekeyMounted(_ path: String, volume: String) -> String? {
        do {
            _ = try ControlClient.send(.rekey(path: path), volume: volume)
            return nil
        } catch {
            return error.message
        }
    }
}
