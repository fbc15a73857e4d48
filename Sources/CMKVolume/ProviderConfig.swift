import Foundation

/// How the volume reaches its key provider. Recorded at `init` so `mount` and the admin commands
/// need no provider flags. Holds no secret: PINs and tokens never enter the volume.
///
/// In `cmkfs.volume` it is one JSON object: `kind`, `key_id`, and the kind's own settings as
/// string members (`kms_dir`, `kms_socket`, `pkcs11_module`, `token_label`, …). A provider kind
/// names its settings in its `ProviderKind`; this type needs no change for a new kind.
public struct ProviderConfig: Codable, Sendable, Equatable {
    /// The provider kind, a name in `ProviderRegistry` ("embedded", "socket", "pkcs11", …).
    public var kind: String
    /// The master key's id inside the provider (pkcs11: the label stem, versions are `<id>.v<N>`).
    public var keyID: String
    /// The kind's own settings, by their member name in `cmkfs.volume` (never a secret).
    public var settings: [String: String]

    public init(kind: String, keyID: String, settings: [String: String] = [:]) {
        self.kind = kind
        self.keyID = keyID
        self.settings = settings
    }

    public init(kind: String, keyID: String, kmsDir: String? = nil, kmsSocket: String? = nil,
                pkcs11Module: String? = nil, tokenLabel: String? = nil) {
        self.init(kind: kind, keyID: keyID)
        self.kmsDir = kmsDir
        self.kmsSocket = kmsSocket
        self.pkcs11Module = pkcs11Module
        self.tokenLabel = tokenLabel
    }

    /// One setting; nil when the volume does not record it.
    public subscript(setting: String) -> String? {
        get { settings[setting] }
        set { settings[setting] = newValue }
    }

    /// embedded: the keystore directory.
    public var kmsDir: String? { get { self["kms_dir"] } set { self["kms_dir"] = newValue } }
    /// socket: the `cmkfs-kms` socket path.
    public var kmsSocket: String? { get { self["kms_socket"] } set { self["kms_socket"] = newValue } }
    /// pkcs11: the module (shared library) path.
    public var pkcs11Module: String? { get { self["pkcs11_module"] } set { self["pkcs11_module"] = newValue } }
    /// pkcs11: the token label (slot ids change, labels do not).
    public var tokenLabel: String? { get { self["token_label"] } set { self["token_label"] = newValue } }

    /// Any member name: the settings are the members other than `kind` and `key_id`.
    struct Member: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
        static let kind = Member(stringValue: "kind"), keyID = Member(stringValue: "key_id")
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: Member.self)
        kind = try c.decode(String.self, forKey: .kind)
        keyID = try c.decode(String.self, forKey: .keyID)
        settings = [:]
        // A member that is not a string belongs to no kind this cmkfs knows: skipped, so a
        // newer volume still gets "uses key provider X, which this cmkfs does not know".
        for key in c.allKeys where key.stringValue != "kind" && key.stringValue != "key_id" {
            if let value = try? c.decodeIfPresent(String.self, forKey: key) { settings[key.stringValue] = value }
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: Member.self)
        try c.encode(kind, forKey: .kind)
        try c.encode(keyID, forKey: .keyID)
        for (name, value) in settings.sorted(by: { $0.key < $1.key }) { try c.encode(value, forKey: Member(stringValue: name)) }
    }
}
