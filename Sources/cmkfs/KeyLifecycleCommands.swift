import ArgumentParser
import Foundation
import CMKSystem
import CMKControl
import CMKKeyService
import CMKKeys
import CMKVolume

/// Options every key command shares: the keystore override and the PKCS#11 PIN.
struct KeyAccessOptions: ParsableArguments {
    @Option(name: .customLong("kms-dir"), help: "Use this embedded KMS keystore instead of the one the volume records.")
    var kmsDir: String?
    @Option(name: [.customLong("pin-file"), .customLong("vault-token-file")], help: "PKCS#11 volumes: a file holding the user PIN, Vault volumes: the token (else $CMKFS_PKCS11_PIN or $VAULT_TOKEN, else the terminal).")
    var pinFile: String?

    func admin(_ volume: String) throws(CMKError) -> KeyAdmin {
        let pin = try PINSource.forVolume(volume, pinFile: pinFile, promptAtTerminal: true)
        return try KeyAdmin.open(at: volume, kmsDir: kmsDir, pin: pin)
    }
}

extension KeyCommand {
    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List the master-key versions, their state and how many files each wraps.",
            discussion: """
            States: active (wraps new files), deactivated (after a rotation: still unwraps, wraps nothing \
            new), disabled (refused by the provider now), destroyed (destroyed in the provider outside \
            cmkfs), purged. Example: cmkfs key list /srv/vol --json
            """
        )
        @Argument(help: "The volume directory.") var volume: String
        @OptionGroup var access: KeyAccessOptions
        @Flag(help: "Print one JSON object: {\"format\": 1, \"versions\": [{\"version\": 2, \"state\": \"active\", \"edeks\": 2001, …}], …}.")
        var json = false

        func run() {
            reporting { () throws(CMKError) in
                ControlClient.settle(volume: volume)
                let listing = try access.admin(volume).list()
                if json { printJSON(listing); return }
                print("master key \(listing.keyID) (\(listing.provider) provider)")
                print("VERSION  STATE        EDEKS  CREATED")
                for v in listing.versions {
                    print(String(format: "%7d  ", v.version) + v.state.padding(toLength: 12, withPad: " ", startingAt: 0)
                          + String(format: "%6d  ", v.edeks) + v.createdAt
                          + (v.providerError.map { "  (provider: \($0))" } ?? ""))
                }
                if let r = listing.rotation {
                    print("rotation to version \(r.target) in progress since \(r.startedAt) (\(r.rewrapped) re-wrapped); resume with: cmkfs key rotate \(volume)")
                }
            }
        }
    }

    struct Rotate: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Rotate the master key: a new active version, and every file's key re-wrapped under it.",
            discussion: """
            Works while the volume is mounted and in use; file data is not rewritten. The old version is \
            deactivated (still unwraps, wraps nothing new) until you purge it. Interrupted (killed, provider \
            down), it resumes where it stopped when run again. AWS KMS volumes: --aws-key-id moves the volume \
            onto another KMS key (ReEncrypt inside AWS), after which the old key can be disabled or deleted. \
            Example: cmkfs key rotate /srv/vol --json
            """
        )
        @Argument(help: "The volume directory.") var volume: String
        @OptionGroup var access: KeyAccessOptions
        @Option(help: "EDEKs per transaction.") var batchSize = 1000
        @Option(help: "At most this many EDEKs per second, to spare a shared HSM or KMS (default: as fast as it goes).")
        var maxRate: Double?
        @Flag(help: "Print a JSON summary instead of text.") var json = false
        @Option(name: .customLong("aws-key-id"), help: ArgumentHelp(
            "aws-kms: move the volume onto this KMS key (key id, ARN or alias/NAME; it must exist and be enabled): the new version is that key, every EDEK is re-encrypted into it.",
            valueName: "KEY"))
        var awsKeyID: String?

        func run() {
            reporting { () throws(CMKError) in
                let admin = try access.admin(volume)
                if awsKeyID != nil, admin.config.provider.kind != ProviderKind.awsKMS.name {
                    throw CMKError(.usage, "--aws-key-id is for aws-kms volumes; \(admin.path) uses the \(admin.config.provider.kind) key provider",
                                   hint: "rotate without it: cmkfs key rotate \(volume)")
                }
                let audit = CommandAudit(admin)
                var bar = ProgressReport("re-wrapping", unit: "file keys")
                let report: RotationReport
                do throws(CMKError) {
                    report = try admin.rotate(batchSize: max(1, batchSize), maxRate: maxRate, newKeyID: awsKeyID, audit: audit.sink,
                                              mount: ControlledMount(volume: admin.path)) { bar.update($0, $1) }
                } catch {
                    try? audit.close()
                    throw error
                }
                try audit.close()
                if json {
                    printJSON(report)
                } else {
                    print((report.resumed ? "resumed and finished" : "rotated")
                          + ": version \(report.target) of \(report.keyID) is active; \(report.rewrapped) file keys re-wrapped in "
                          + String(format: "%.2f s (%.0f/s)", report.seconds, report.perSecond))
                }
                if report.failed > 0 {
                    throw CMKError(.incomplete, "\(report.failed) file keys did not unwrap and stay under their old version: \(report.failedFiles.prefix(5).joined(separator: ", "))",
                                   hint: "check them with: cmkfs fsck \(volume); their old version cannot be purged without --force")
                }
            }
        }
    }

    struct Purge: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Destroy a deactivated master-key version in the provider, for good.",
            discussion: """
            Refuses while any file is still wrapped under the version (finish the rotation first). With \
            --force it proceeds after a typed confirmation (or --yes) and records every file that becomes \
            unreadable. Backups whose metadata still names the version can no longer be read after a purge. \
            Example: cmkfs key purge /srv/vol --version 1
            """
        )
        @Argument(help: "The volume directory.") var volume: String
        @Option(help: "The version to purge.") var version: Int
        @Flag(help: "Purge even though files are still wrapped under it (they become unreadable).") var force = false
        @Flag(help: "Do not ask for confirmation (scripts).") var yes = false
        @OptionGroup var access: KeyAccessOptions
        @Flag(help: "Print a JSON summary (the files made unreadable).") var json = false

        func run() {
            reporting { () throws(CMKError) in
                ControlClient.settle(volume: volume)
                let admin = try access.admin(volume)
                let audit = CommandAudit(admin)
                let report: PurgeReport
                do throws(CMKError) {
                    report = try admin.purge(version: version, force: force, confirm: confirm, audit: audit.sink,
                                             mount: ControlledMount(volume: admin.path))
                } catch {
                    try? audit.close()
                    throw error
                }
                try audit.close()
                if json { printJSON(report); return }
                print("purged version \(version) of \(admin.config.provider.keyID)"
                      + (report.unreadable.isEmpty ? "" : "; \(report.unreadable.count) files are now unreadable (listed in the audit log)"))
            }
        }

        /// A forced purge that makes files unreadable needs a typed confirmation (or --yes).
        private func confirm(_ count: Int) throws(CMKError) {
            guard count > 0 && force && !yes else { return }
            guard Descriptor(rawValue: STDIN_FILENO).isTerminal else {
                throw CMKError(.refused, "\(count) files would become unreadable; confirmation needed",
                               hint: "add --yes to confirm from a script")
            }
            let expected = "purge \(version)"
            FileHandle.standardError.write("\(count) files are wrapped only under version \(version) and will become unreadable for good.\nType '\(expected)' to go on: ".data(using: .utf8)!)
            guard readLine()?.trimmingCharacters(in: .whitespaces) == expected else {
                throw CMKError(.refused, "not confirmed; nothing was purged")
            }
        }
    }
}

/// The volume's live mount, reached over its control socket; every call does nothing when the
/// volume is not mounted (checked at the call: a long operation may outlive the mount).
struct ControlledMount: LiveMount {
    let volume: String

    func relabel() throws(CMKError) {
        guard MountLock.holder(volumePath: volume) != nil else { return }
        _ = try ControlClient.send(.relabel, volume: volume)
    }

    func flush(_ key: KeyRef, reason: String) throws(CMKError) {
        guard MountLock.holder(volumePath: volume) != nil else { return }
        _ = try ControlClient.send(.flushKey(keyID: key.keyID, version: key.version, reason: reason), volume: volume)
    }
}
