import CMKCrypto
import CMKKeys
import CMKMetadata

/// The master key of a volume as the key owner manages it: its versions and their state in the
/// provider. Opens without the key check, so a disabled key can be enabled again.
public struct KeyAdmin {
    public let path: String
    public let config: VolumeConfig
    public let provider: any KeyProvider
    /// The versions the volume knows, from its metadata database.
    public let versions: [KeyRef]

    /// `pin` logs in to a PKCS#11 token (used once, never stored).
    public static func open(at path: String, kmsDir: String? = nil, pin: SecretBytes? = nil) throws(CMKError) -> KeyAdmin {
        let path = absolute(path)
        let config = try Volume.readConfig(path)
        var providerConfig = config.provider
        if let kmsDir { providerConfig.kmsDir = absolute(kmsDir) }
        let store: MetadataStore
        do { store = try MetadataStore.open(at: path + "/meta.db") } catch { throw .metadata(error, volume: path) }
        defer { store.close() }
        let records: [KeyVersionRecord]
        do { records = try store.keyVersions() } catch { throw .metadata(error, volume: path) }
        let provider = try Volume.makeProvider(providerConfig, create: false, volume: path, pin: pin)
        return KeyAdmin(path: path, config: config, provider: provider,
                        versions: records.filter { $0.state != .purged }.map { KeyRef(keyID: $0.keyId, version: $0.version) })
    }

    /// Sets every version's state in the provider; returns the versions changed.
    public func setAll(_ state: ProviderKeyState) throws(CMKError) -> [KeyRef] {
        var changed: [KeyRef] = []
        for key in versions {
            do {
                guard try provider.state(of: key) != state else { continue }
                try provider.setState(state, of: key)
                changed.append(key)
            } catch {
                throw .provider(error, volume: path, config: config.provider)
            }
        }
        return changed
    }
}
