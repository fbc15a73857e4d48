import Foundation

/// How the volume reaches its key provider. Recorded at `init` so `mount` and the admin commands
/// need no provider flags. Holds no secret: PINs and tokens never enter the volume.
public struct ProviderConfig: Codable, Sendable, Equatable {
    /// "embedded" (the in-process simulated KMS), "socket" (`cmkfs-kms` over a Unix socket) or
    /// "pkcs11" (an HSM token).
    public var kind: String
    /// The master key's id inside the provider (pkcs11: the label stem, versions are `<id>.v<N>`).
    public var keyID: String
    /// embedded: the keystore directory.
    public var kmsDir: String?
    /// socket: the `cmkfs-kms` socket path.
    public var kmsSocket: String?
    /// pkcs11: the module (shared library) path.
    public var pkcs11Module: String?
    /// pkcs11: the token label (slot ids change, labels do not).
    public var tokenLabel: String?

    public init(kind: String, keyID: String, kmsDir: String? = nil, kmsSocket: String? = nil,
                pkcs11Module: String? = nil, tokenLabel: String? = nil) {
        self.kind = kind
        self.keyID = keyID
        self.kmsDir = kmsDir
        self.kmsSocket = kmsSocket
        self.pkcs11Module = pkcs11Module
        self.tokenLabel = tokenLabel
    }
}

/// The volume's configuration file, `VOLUME/cmkfs.volume` (JSON, written once by `init`).
public struct VolumeConfig: Codable, Sendable, Equatable {
    /// The newest volume format this build reads and writes: 2 (encrypted names). Format 1
    /// (names in clear) is still read and written (`init --plaintext-names`).
    public static let currentFormat = 2
    public static let fileName = "cmkfs.volume"

    /// Volume format version; a newer one is refused rather than misread.
    public var format: Int
    /// 16 random bytes, hex; bound into every EDEK's wrap.
    public var volumeID: String
    /// ISO-8601 UTC time of `init`.
    public var createdAt: String
    /// Plaintext bytes per content block.
    public var blockSize: Int
    /// How names are stored in the backing tree: "plaintext" (format 1) or "aes-256-siv"
    /// (format 2, the default: docs/on-disk-format.md).
    public var names: String
    public var provider: ProviderConfig

    enum CodingKeys: String, CodingKey {
        case format, volumeID = "volume_id", createdAt = "created_at", blockSize = "block_size", names, provider
    }
}

extension ProviderConfig {
    enum CodingKeys: String, CodingKey {
        case kind, keyID = "key_id", kmsDir = "kms_dir", kmsSocket = "kms_socket"
        case pkcs11Module = "pkcs11_module", tokenLabel = "token_label"
    }
}
