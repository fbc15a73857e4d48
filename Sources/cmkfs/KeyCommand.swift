import ArgumentParser
import Foundation
import CMKAudit
import CMKControl
import CMKKeyService
import CMKVolume

struct KeyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "key",
        abstract: "The master key: list, rotate and purge its versions; revoke or enable it (the kill switch).",
        discussion: "Example: cmkfs key list /srv/secure-vol",
        subcommands: [List.self, Rotate.self, Purge.self, Revoke.self, Enable.self]
    )

    struct Revoke: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Disable the master key in the provider and flush it from the live mount.",
            discussion: """
            New opens fail at once and files already open fail their next read or write (EACCES); \
            the mount also drops their pages from the kernel's page cache. Undo with: cmkfs key enable VOLUME

            Example: cmkfs key revoke /srv/secure-vol --reason "incident 4711"
            """
        )
        @Argument(help: "The volume directory.") var volume: String
        @Option(help: "Why (recorded in the mount's log).") var reason: String?
        @Flag(help: "Print one JSON object (what was disabled, flushed and cut, and the timings) instead of text.")
        var json = false
        @Option(name: .customLong("kms-dir"), help: "Use this embedded KMS keystore instead of the one the volume records.")
        var kmsDir: String?
        @Option(name: [.customLong("pin-file"), .customLong("vault-token-file")], help: "PKCS#11 volumes: a file holding the user PIN, Vault volumes: the token (else $CMKFS_PKCS11_PIN or $VAULT_TOKEN, else the terminal).")
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
                // The flush goes first: recording the revocation waits for a durable write.
                // Every key the volume's versions name (more than one after a rotation onto a new key).
                var flush: ControlResponse?
                if mounted {
                    for keyID in Set(admin.versions.map(\.keyID) + [admin.config.provider.keyID]).sorted() {
                        let r = try ControlClient.send(.flushKey(keyID: keyID, version: nil, reason: "cmkfs key revoke" + (reason.map { ": \($0)" } ?? "")),
                                                       volume: admin.path)
                        if var sum = flush {
                            sum.flushed = (sum.flushed ?? 0) + (r.flushed ?? 0)
                            sum.openFilesCut = (sum.openFilesCut ?? 0) + (r.openFilesCut ?? 0)
                            sum.elapsedMilliseconds = (sum.elapsedMilliseconds ?? 0) + (r.elapsedMilliseconds ?? 0)
                            flush = sum
                        } else {
                            flush = r
                        }
                    }
                }
                let flushedAt = monotonicNow()
                // key_version: the newest version disabled (detail lists them all).
                let newest = admin.versions.map(\.version).max()
                if let auditKey {
                    try admin.appendAudit(.command("revoke", keyID: admin.config.provider.keyID, keyVersion: newest, detail: detail),
                                          key: auditKey)
                } else {
                    _ = try ControlClient.send(.audit(ControlAuditRecord(event: "revoke", keyID: admin.config.provider.keyID,
                                                                         keyVersion: newest, detail: detail),
                                                            durable: true), volume: admin.path)
                }
                var result = Revoked(keyID: admin.config.provider.keyID, versions: admin.versions.map(\.version),
                                     provider: admin.config.provider.kind, alreadyDisabled: changed.isEmpty, mounted: mounted)
                if !json {
                    print("disabled \(keys) in the \(admin.config.provider.kind) key provider"
                          + (changed.isEmpty ? " (already disabled)" : ""))
                }
                guard let r = flush else {
                    if json { printJSON(result) } else { print("the volume is not mounted: nothing cached to flush") }
                    return
                }
                let total = (flushedAt - start) * 1000
                result.flushed = r.flushed ?? 0
                result.openFilesCut = r.openFilesCut ?? 0
                result.totalMilliseconds = total
                result.providerMilliseconds = (disabledAt - start) * 1000
                result.flushMilliseconds = r.elapsedMilliseconds ?? 0
                if json { printJSON(result); return }
                print("flushed \(r.flushed ?? 0) keys and cut \(r.openFilesCut ?? 0) open files in the live mount")
                print(String(format: "time from request to flushed cache: %.1f ms (provider %.1f ms, mount flush %.1f ms)",
                             total, (disabledAt - start) * 1000, r.elapsedMilliseconds ?? 0))
            }
        }
    }

    /// `cmkfs key revoke --json` (docs/json.md); the flush fields are null when not mounted.
    struct Revoked: Encodable {
        var format = 1
        var keyID: String
        var versions: [Int]
        var provider: String
        var alreadyDisabled: Bool
        var mounted: Bool
        var flushed: Int?
        var openFilesCut: Int?
        var totalMilliseconds, providerMilliseconds, flushMilliseconds: Double?
        enum CodingKeys: String, CodingKey {
            case format, keyID = "key_id", versions, provider, alreadyDisabled = "already_disabled", mounted, flushed
            case openFilesCut = "open_files_cut", totalMilliseconds = "total_ms", providerMilliseconds = "provider_ms"
            case flushMilliseconds = "flush_ms"
        }
        // Absent values are written as null, so every key is always there for a script.
        func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(format, forKey: .format); try c.encode(keyID, forKey: .keyID); try c.encode(versions, forKey: .versions)
            try c.encode(provider, forKey: .provider); try c.encode(alreadyDisabled, forKey: .alreadyDisabled)
            try c.encode(mounted, forKey: .mounted); try c.encode(flushed, forKey: .flushed)
            try c.encode(openFilesCut, forKey: .openFilesCut); try c.encode(totalMilliseconds, forKey: .totalMilliseconds)
            try c.encode(providerMilliseconds, forKey: .providerMilliseconds); try c.encode(flushMilliseconds, forKey: .flushMilliseconds)
        }
    }

    struct Enable: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Enable the master key again after a revocation.",
            discussion: "Files opened from then on are readable; a handle opened before the revocation stays cut until its file is opened again. Example: cmkfs key enable /srv/secure-vol")
        @Argument(help: "The volume directory.") var volume: String
        @Option(name: .customLong("kms-dir"), help: "Use this embedded KMS keystore instead of the one the volume records.")
        var kmsDir: String?
        @Option(name: [.customLong("pin-file"), .customLong("vault-token-file")], help: "PKCS#11 volumes: a file holding the user PIN, Vault volumes: the token (else $CMKFS_PKCS11_PIN or $VAULT_TOKEN, else the terminal).")
        var pinFile: String?

        func run() {
            reporting { () throws(CMKError) in
                let pin = try PINSource.forVolume(volume, pinFile: pinFile, promptAtTerminal: true)
                let admin = try KeyAdmin.open(at: volume, kmsDir: kmsDir, pin: pin)
                let changed = try admin.setAll(.enabled)
                let detail = "enabled \(admin.versions.map(\.description).joined(separator: ", "))"
                let newest = admin.versions.map(\.version).max()
                if MountLock.holder(volumePath: admin.path) != nil {
                    _ = try ControlClient.send(.audit(ControlAuditRecord(event: "enable", keyID: admin.config.provider.keyID,
                                                                         keyVersion: newest, detail: detail),
                                                            durable: true), volume: admin.path)
                } else {
                    try admin.appendAudit(.command("enable", keyID: admin.config.provider.keyID, keyVersion: newest, detail: detail),
                                          key: try admin.auditKey())
                }
                print("enabled \(admin.versions.map(\.description).joined(separator: ", "))"
                      + (changed.isEmpty ? " (already enabled)" : "") + "; files opened from now on are readable")
            }
        }
    }
}
