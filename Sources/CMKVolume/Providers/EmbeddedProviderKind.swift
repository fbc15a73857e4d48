import Foundation
import CMKKeys

extension ProviderKind {
    /// The simulated KMS inside the cmkfs process, its keystore a directory of key files.
    public static let embedded = ProviderKind(
        name: "embedded",
        initHelp: "--kms embedded (default): keystore directory --kms-dir (default /var/lib/cmkfs/kms or $CMKFS_KMS_DIR).",
        flags: [
            ProviderFlag("--kms-dir", valueName: "DIR", help: "embedded: the KMS keystore directory (default \(defaultDirectory)).",
                         target: .setting("kms_dir"), isPath: true, defaultValue: { defaultDirectory }),
        ],
        rotationParallelism: .perProcessor,
        build: { config, context throws(CMKError) in
            let dir = config.kmsDir ?? SimulatedKMS.defaultDirectory
            let kms: SimulatedKMS
            do { kms = try SimulatedKMS(directory: dir, create: context.create) } catch {
                var refused = CMKError(.keyUnavailable, "\(error) (needed by \(context.volume))",
                                       hint: "restore the keystore directory, or pass --kms-dir with the directory that holds key \(config.keyID)")
                refused.reason = "missing"
                throw refused
            }
            let warnings: [String]
            do throws(KeystoreModes.Refusal) { warnings = try KeystoreModes.check(dir) } catch {
                throw CMKError(.keyUnavailable, "refusing \(error.description)", hint: error.fix)
            }
            for warning in warnings { warn(warning) }
            if KeystorePlacement.isInside(dir, context.volume) {
                warn("the KMS keystore \(dir) is inside the volume it protects: every copy of the volume carries its master key; move the keystore out and pass --kms-dir (cmkfs fsck reports it as keystore-in-volume)")
            }
            return kms
        },
        refuseAtInit: { config, path throws(CMKError) in
            if let kmsDir = config.kmsDir, KeystorePlacement.isInside(kmsDir, path) {
                throw CMKError(.refused, "the KMS keystore \(kmsDir) would be inside the volume \(path) it protects: every copy of the volume would carry its master key",
                               hint: "keep the keystore outside the volume, e.g. --kms-dir /var/lib/cmkfs/kms")
            }
        },
        place: unknownPlace,
        initDescription: { "the embedded KMS at \($0.kmsDir ?? "?")" },
        statusDetail: { $0.kmsDir.map { " at \($0)" } ?? "" },
        hints: unknownHints
    )

    /// `init`'s keystore directory when --kms-dir is not given: `$CMKFS_KMS_DIR`, else the
    /// system default.
    static var defaultDirectory: String {
        ProcessInfo.processInfo.environment["CMKFS_KMS_DIR"] ?? SimulatedKMS.defaultDirectory
    }

    /// How messages name a provider of a kind this cmkfs does not know (and the embedded KMS).
    static let unknownPlace: @Sendable (ProviderConfig) -> String = { config in
        config.kmsDir.map { "the KMS keystore \($0)" } ?? "the \(config.kind) key provider"
    }

    static let unknownHints: @Sendable (ProviderConfig) -> ProviderHints = { config in
        ProviderHints(notFound: "restore the keystore, or pass --kms-dir with the keystore that holds \(config.keyID)",
                      disabled: "the key owner must enable it again", unavailable: nil)
    }
}
