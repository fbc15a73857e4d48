import Foundation

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

    /// Whether the volume's backing names are encrypted (`names` is `Volume.encryptedNames`).
    public var encryptsNames: Bool { names == Volume.encryptedNames }
}
