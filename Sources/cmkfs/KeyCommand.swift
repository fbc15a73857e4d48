import ArgumentParser
import Foundation
import CMKAudit
import CMKKeyService
import CMKVolume

struct KeyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "key",
        abstract: "The master key: list, rotate and purge its versions; revoke or enable it (the kill switch).",
        subcommands: [List.self, Rotate.self, Purge.self, Revoke.self, Enable.self]
    )

    struct Revoke: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Disable the master key in the provider and flush it from the live mount.",
            discussion: """
            New opens fail at once and files already open fail their next read or write (EACCES); \
            the mount also drops their pages from the kernel's page cache. Undo with: cmkfs key enable VOLUME
            """
        )
        @Argument(help: "The volume directory.") var volume: String
        @Option(help: "Why (recorded in the mount's log).") var reason: String?
        @Option(name: .customLong("kms-dir"), help: "Use this embedded KMS keystore instead of the one the volume records.")
        var kmsDir: String?
        @Option(name: .customLong("pin-file"), help: "PKCS#11 volumes: a file holding the user PIN (else $CMKFS_PKCS11_PIN, else the terminal).")
        var pinFile: String?

        func run() {
            reporting { () throws(CMKError) in
                let start = monotonicNow()
                let pin = try PINSource.forVolume(volume, pinFile: pinFile, promptAtTerminal: true)
                let admin = try KeyAdmin.open(at: volume, kmsDir: kmsDir, pin: pin)
                let mounted = MountLock.holder(volumePath: admin.path) != nil
                // Unmounted, this command writes the record itself: the audit key must be
                // unwrapped before the master key is disabled.
                let auditKey = mounted ? nil : try admin.auditKey()
                let changed = try admin.setAll(.disabled)
                let disabledAt = monotonicNow()
                let keys = admin.versions.map(\.description).joined(separator: ", ")
                let detail = "disabled \(keys)" + (reason.map { ": \($0)" } ?? "")
                if let auditKey {
                    try admin.appendAudit(.command("revoke", keyID: admin.config.provider.keyID, detail: detail), key: auditKey)
                } else {
                    _ = try ControlClient.send(ControlRequest(op: "audit", keyID: admin.config.provider.keyID, reason: detail,
                                                              event: "revoke"), volume: admin.path)
                }
                print("disabled \(keys) in the \(admin.config.provider.kind) key provider"
                      + (changed.isEmpty ? " (already disabled)" : ""))
                guard mounted else {
                    print("the volume is not mounted: nothing cached to flush")
                    return
                }
                let r = try ControlClient.send(ControlRequest(op: "flush-key", keyID: admin.config.provider.keyID,
                                                              reason: "cmkfs key revoke" + (reason.map { ": \($0)" } ?? "")),
                                               volume: admin.path)
                let total = (monotonicNow() - start) * 1000
                print("flushed \(r.flushed ?? 0) keys and cut \(r.openFilesCut ?? 0) open files in the live mount")
                print(String(format: "time from request to flushed cache: %.1f ms (provider %.1f ms, mount flush %.1f ms)",
                             total, (disabledAt - start) * 1000, r.elapsedMilliseconds ?? 0))
            }
        }
    }

    struct Enable: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Enable the master key again after a revocation.")
        @Argument(help: "The volume directory.") var volume: String
        @Option(name: .customLong("kms-dir"), help: "Use this embedded KMS keystore instead of the one the volume records.")
        var kmsDir: String?
        @Option(name: .customLong("pin-file"), help: "PKCS#11 volumes: a file holding the user PIN (else $CMKFS_PKCS11_PIN, else the terminal).")
        var pinFile: String?

        func run() {
            reporting { () throws(CMKError) in
                let pin = try PINSource.forVolume(volume, pinFile: pinFile, promptAtTerminal: true)
                let admin = try KeyAdmin.open(at: volume, kmsDir: kmsDir, pin: pin)
                let changed = try admin.setAll(.enabled)
                let detail = "enabled \(admin.versions.map(\.description).joined(separator: ", "))"
                if MountLock.holder(volumePath: admin.path) != nil {
                    _ = try ControlClient.send(ControlRequest(op: "audit", keyID: admin.config.provider.keyID, reason: detail,
                                                              event: "enable"), volume: admin.path)
                } else {
                    try admin.appendAudit(.command("enable", keyID: admin.config.provider.keyID, detail: detail), key: try admin.auditKey())
                }
                print("enabled \(admin.versions.map(\.description).joined(separator: ", "))"
                      + (changed.isEmpty ? " (already enabled)" : "") + "; files opened from now on are readable")
            }
        }
    }
}
