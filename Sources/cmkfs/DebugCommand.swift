import ArgumentParser
import Foundation
import CMKVolume

/// `cmkfs debug`: look inside a volume's backing tree (for tests, fsck work and support).
struct DebugCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "debug",
        abstract: "Map between mount paths and backing paths (encrypted names).",
        discussion: "Example: cmkfs debug backing-path /srv/secure-vol reports/q3.pdf",
        subcommands: [BackingPath.self, MountPath.self]
    )

    struct BackingPath: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "backing-path",
            abstract: "Print the backing path (under VOLUME/data) of a path as the mount shows it.",
            discussion: """
            Every directory on the way must exist; the last component need not. Needs the key \
            provider (the name key is unwrapped, and the use is audited). Works mounted or not. \
            Example: cmkfs debug backing-path /srv/vol docs/payroll.xlsx
            """
        )
        @Argument(help: "The volume directory.") var volume: String
        @Argument(help: "A path inside the volume as the mount shows it, e.g. docs/a.txt.") var path: String
        @OptionGroup var access: KeyAccessOptions
        @Flag(help: "Print the path relative to VOLUME/data instead of an absolute one.") var relative = false

        func run() {
            reporting { () throws(CMKError) in
                let pin = try PINSource.forVolume(volume, pinFile: access.pinFile, promptAtTerminal: true)
                let v = try Volume.open(at: volume, kmsDir: access.kmsDir, pin: pin, purpose: "debug")
                defer { v.metadata.close() }
                let backing = try v.backingPath(forMountPath: path)
                try DebugCommand.recordNameKeyUse(v, detail: "debug backing-path")
                print(relative ? backing : (backing.isEmpty ? v.dataPath : v.dataPath + "/" + backing))
            }
        }
    }

    struct MountPath: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "mount-path",
            abstract: "Print the path the mount shows for a backing path (relative to VOLUME/data).",
            discussion: """
            The inverse of backing-path: each encrypted component is decrypted; a component that \
            does not decrypt (tampered, moved) is an error naming it. \
            Example: cmkfs debug mount-path /srv/vol 3vXq…Yw/Lm0…Aa
            """
        )
        @Argument(help: "The volume directory.") var volume: String
        @Argument(help: "A path relative to VOLUME/data (an absolute path under it is accepted too).") var path: String
        @OptionGroup var access: KeyAccessOptions

        func run() {
            reporting { () throws(CMKError) in
                let pin = try PINSource.forVolume(volume, pinFile: access.pinFile, promptAtTerminal: true)
                let v = try Volume.open(at: volume, kmsDir: access.kmsDir, pin: pin, purpose: "debug")
                defer { v.metadata.close() }
                var rel = path
                if rel.hasPrefix(v.dataPath + "/") { rel = String(rel.dropFirst(v.dataPath.count + 1)) }
                let shown = try v.mountPath(forBackingPath: rel)
                try DebugCommand.recordNameKeyUse(v, detail: "debug mount-path")
                print(shown)
            }
        }
    }

    /// The name key was unwrapped: one audit record, through the mount when it is mounted.
    static func recordNameKeyUse(_ v: Volume, detail: String) throws(CMKError) {
        guard v.encryptsNames else { return }
        let mounted = MountLock.holder(volumePath: v.path) != nil
        let audit = CommandAudit(path: v.path, direct: !mounted) { () throws(CMKError) in try v.openCommandAuditLog() }
        defer { try? audit.close() }
        try audit.record(.command("name-key", keyID: v.config.provider.keyID, keyVersion: try? v.nameKeyVersion(),
                                  detail: "the name key was unwrapped for \(detail)"), durable: false)
    }
}
