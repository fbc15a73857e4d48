import ArgumentParser
import CMKFormat
import CMKVolume

struct InitCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "init",
        abstract: "Create a new volume with its master key in a key provider (embedded KMS, socket KMS or PKCS#11 HSM).",
        discussion: """
        VOLUME must be missing or an empty directory. The master key is kept in the key provider, \
        never in the volume, so copying the volume does not copy the key.
          --kms embedded (default): keystore directory --kms-dir (default /var/lib/cmkfs/kms or $CMKFS_KMS_DIR).
          --kms socket: a cmkfs-kms process at --kms-socket PATH; --key-id ID uses an existing key.
          --kms pkcs11: --pkcs11-module PATH --token LABEL, PIN from --pin-file FILE, $CMKFS_PKCS11_PIN \
        or the terminal; --key-label NAME names (or reuses) the master key.
        File and directory names and symlink targets are encrypted under a name key wrapped by the \
        master key; --plaintext-names (debugging only) leaves them in clear.

        Example: cmkfs init /srv/secure-vol --kms-dir /etc/cmkfs/kms
        """
    )

    @Argument(help: "The directory to hold the ciphertext, metadata database and audit log.")
    var volume: String

    @Flag(help: "Print one JSON object (volume, volume_id, key_id, key_version, provider, names) instead of text.")
    var json = false

    @Option(help: "The key provider: embedded, socket or pkcs11.")
    var kms: String = "embedded"

    @Option(name: .customLong("kms-dir"), help: "embedded: the KMS keystore directory (default \(defaultKMSDir)).")
    var kmsDir: String?

    @Option(name: .customLong("kms-socket"), help: "socket: the cmkfs-kms socket path.")
    var kmsSocket: String?

    @Option(name: .customLong("key-id"), help: "socket: use this existing master key instead of creating one.")
    var keyID: String?

    @Option(name: .customLong("pkcs11-module"), help: "pkcs11: the PKCS#11 module (e.g. /usr/lib/softhsm/libsofthsm2.so).")
    var pkcs11Module: String?

    @Option(help: "pkcs11: the token label.")
    var token: String?

    @Option(name: .customLong("pin-file"), help: "pkcs11: a file holding the user PIN (else $CMKFS_PKCS11_PIN, else the terminal).")
    var pinFile: String?

    @Option(name: .customLong("key-label"), help: "pkcs11: the master key's label stem (objects <label>.v<N>); reused if present.")
    var keyLabel: String?

    @Option(name: .customLong("block-size"), help: "Plaintext bytes per encrypted block (power of two, 512…1048576).")
    var blockSize: Int = BlockLayout.defaultBlockSize

    @Flag(name: .customLong("plaintext-names"),
          help: "DEBUGGING ONLY: keep file names, directory names and symlink targets in clear in the backing tree (volume format 1).")
    var plaintextNames = false

    func validate() throws {
        guard blockSize >= 512, blockSize <= 1 << 20, blockSize.nonzeroBitCount == 1 else {
            throw ValidationError("--block-size must be a power of two from 512 to 1048576")
        }
        // A flag of a provider not chosen is a mistake, never ignored: `--kms-socket S` without
        // `--kms socket` used to make an embedded volume, the opposite of what was meant.
        let owners: [(flag: String, given: Bool, kind: String)] = [
            ("--kms-dir", kmsDir != nil, "embedded"), ("--kms-socket", kmsSocket != nil, "socket"), ("--key-id", keyID != nil, "socket"),
            ("--pkcs11-module", pkcs11Module != nil, "pkcs11"), ("--token", token != nil, "pkcs11"),
            ("--pin-file", pinFile != nil, "pkcs11"), ("--key-label", keyLabel != nil, "pkcs11"),
        ]
        for owner in owners where owner.given && owner.kind != kms && ["embedded", "socket", "pkcs11"].contains(kms) {
            fail(CMKError(.usage, "\(owner.flag) is a flag of the \(owner.kind) provider, but the volume would use the \(kms) provider",
                          hint: kms == "embedded" && kmsDir == nil ? "add --kms \(owner.kind) (the default is embedded)" : "drop \(owner.flag), or choose --kms \(owner.kind)"))
        }
        switch kms {
        case "embedded": break
        case "socket":
            guard kmsSocket != nil else { throw ValidationError("--kms socket needs --kms-socket PATH") }
        case "pkcs11":
            guard pkcs11Module != nil, token != nil else { throw ValidationError("--kms pkcs11 needs --pkcs11-module PATH and --token LABEL") }
        default:
            throw ValidationError("--kms must be embedded, socket or pkcs11")
        }
    }

    func run() {
        reporting { () throws(CMKError) in
            let v: Volume
            switch kms {
            case "socket":
                v = try Volume.initialize(at: volume, provider: ProviderConfig(kind: "socket", keyID: keyID ?? "", kmsSocket: absolute(kmsSocket!)),
                                          blockSize: blockSize, plaintextNames: plaintextNames)
            case "pkcs11":
                let pin = try PINSource.read(pinFile: pinFile, promptAtTerminal: true, token: token!)
                let config = ProviderConfig(kind: "pkcs11", keyID: keyLabel ?? "", pkcs11Module: pkcs11Module!, tokenLabel: token!)
                v = try Volume.initialize(at: volume, provider: config, pin: pin, blockSize: blockSize, plaintextNames: plaintextNames)
            default:
                v = try Volume.initialize(at: volume, kmsDir: kmsDir ?? defaultKMSDir, blockSize: blockSize, plaintextNames: plaintextNames)
            }
            if json {
                printJSON(Created(volume: v.path, volumeID: v.config.volumeID, keyID: v.activeKey.keyID, keyVersion: v.activeKey.version,
                                  provider: v.config.provider.kind, names: v.encryptsNames ? "encrypted" : "plaintext"))
                return
            }
            print("created volume \(v.path)")
            print("  volume id:  \(v.config.volumeID)")
            print("  master key: \(v.activeKey) in \(where_(v.config.provider))")
            print("  names:      " + (v.encryptsNames ? "encrypted (AES-256-SIV)" : "IN CLEAR (--plaintext-names: for debugging only)"))
            print("mount it with: cmkfs mount \(v.path) MOUNTPOINT")
        }
    }

    /// `cmkfs init --json` (docs/json.md).
    struct Created: Encodable {
        var format = 1
        var volume, volumeID, keyID: String
        var keyVersion: Int
        var provider, names: String
        enum CodingKeys: String, CodingKey {
            case format, volume, volumeID = "volume_id", keyID = "key_id", keyVersion = "key_version", provider, names
        }
    }

    private func where_(_ p: ProviderConfig) -> String {
        switch p.kind {
        case "socket": return "the KMS at \(p.kmsSocket ?? "?")"
        case "pkcs11": return "PKCS#11 token '\(p.tokenLabel ?? "?")' (\(p.pkcs11Module ?? "?"))"
        default: return "the embedded KMS at \(p.kmsDir ?? "?")"
        }
    }
}
