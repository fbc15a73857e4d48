import ArgumentParser
import Foundation
import CMKVolume

struct StatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show a volume's id, key provider, active key version, file count and mount state.",
        discussion: "Example: cmkfs status /srv/secure-vol --json"
    )

    @Argument(help: "The volume directory.")
    var volume: String

    @Option(name: .customLong("kms-dir"), help: "Use this embedded KMS keystore instead of the one the volume records.")
    var kmsDir: String?

    @Option(name: [.customLong("pin-file"), .customLong("vault-token-file")], help: "PKCS#11 volumes: a file holding the user PIN, Vault volumes: the token for the key check (else $CMKFS_PKCS11_PIN or $VAULT_TOKEN).")
    var pinFile: String?

    @Flag(help: "Print one JSON object (stable field names, see docs/json.md).")
    var json = false

    func run() {
        reporting { () throws(CMKError) in
            let pin = try PINSource.forVolume(volume, pinFile: pinFile, promptAtTerminal: false)
            ControlClient.settle(volume: volume)
            var s = try VolumeStatus.of(volume, kmsDir: kmsDir, pin: pin)
            if s.mounted, let t = (try? ControlClient.send(.stats, volume: volume))?.transport {
                s.fuseTransport = t.active
                s.fuseTransportNote = t.fallback
            }
            if json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
                print(String(decoding: (try? encoder.encode(s)) ?? Data(), as: UTF8.self))
                if s.exitCode != 0 { Foundation.exit(s.exitCode) }
                return
            }
            print("volume:        \(s.volume)")
            print("volume id:     \(s.volumeID)")
            print("format:        \(s.format) (block size \(s.blockSize), names \(s.names))")
            print("key provider:  \(s.provider.kind)" + (ProviderRegistry.kind(named: s.provider.kind)?.describeForStatus(s.provider) ?? ""))
            print("master key:    \(s.provider.keyID), active version \(s.activeKeyVersion.map(String.init) ?? "none")")
            for v in s.keyVersions { print("  version \(v.version): \(v.state), \(v.edeks) EDEKs") }
            print("key check:     \(s.keyCheck)")
            print("audit key:     \(s.auditKey)")
            print("files:         \(s.fileCount)")
            if s.mounted {
                print("mounted:       yes, at \(s.mountpoint ?? "?") (pid \(s.mountPID.map(String.init) ?? "?"))")
                if let t = s.fuseTransport {
                    print("transport:     \(t == "io_uring" ? "FUSE over io_uring" : "/dev/fuse")" + (s.fuseTransportNote.map { " (io_uring not used: \($0))" } ?? ""))
                }
            } else if let stale = MountTable.entries().first(where: { $0.source == "cmkfs:" + s.volume && $0.type == "fuse.cmkfs" }) {
                // The kernel still has the mount but no daemon serves it (killed): say so.
                print("mounted:       no — stale mount at \(stale.mountpoint) (transport endpoint is not connected: its daemon is gone); clear it with: cmkfs unmount \(stale.mountpoint)")
            } else {
                print("mounted:       no")
            }
            // The report is printed either way; a key that cannot be used is also the exit code.
            if s.exitCode != 0 { Foundation.exit(s.exitCode) }
        }
    }
}
