import ArgumentParser
import CMKAudit
import Foundation
import CMKVolume

/// `cmkfs`: the encrypted mount and its admin commands.
struct CMKFSCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cmkfs",
        abstract: "A FUSE filesystem that encrypts every file under customer-managed keys.",
        discussion: """
        Exit codes are listed in docs/exit-codes.md; each command's --help has an example.

        Example: cmkfs init /srv/secure-vol && cmkfs mount /srv/secure-vol /mnt/secure
        """,
        version: cmkfsVersion,
        subcommands: [InitCommand.self, MountCommand.self, UnmountCommand.self, StatusCommand.self,
                      CacheCommand.self, MetricsCommand.self, InfoCommand.self, KeyCommand.self, RekeyCommand.self, AuditCommand.self, FsckCommand.self, DebugCommand.self]
    )
}

/// Prints `cmkfs: error: …` and `cmkfs: hint: …` on stderr and exits with the error's code.
func fail(_ error: CMKError) -> Never {
    var text = "cmkfs: error: \(error.message)\n"
    if let hint = error.hint { text += "cmkfs: hint: \(hint)\n" }
    FileHandle.standardError.write(text.data(using: .utf8)!)
    exit(error.code.rawValue)
}

/// Runs `body`, turning a `CMKError` into the documented message and exit code.
func reporting(_ body: () throws(CMKError) -> Void) {
    do { try body() } catch { fail(error) }
}
