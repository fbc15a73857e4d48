import CMKKeys
import CMKMetadata

extension Volume {
    /// The master key of `version`: the key id the volume recorded for that version
    /// (`key_versions`), which a rotation onto another provider key changes. A configuration
    /// that names a key the volume never recorded is taken at its word instead (the provider
    /// then says it has no such key): a volume pointed at another key is refused, not read
    /// with the recorded one behind the operator's back.
    static func masterKey(version: Int, in store: any KeyVersionStore, fallback configured: String) throws(MetadataError) -> KeyRef {
        let records = try store.keyVersions()
        guard records.contains(where: { $0.keyId == configured }) else { return KeyRef(keyID: configured, version: version) }
        return KeyRef(keyID: records.last { $0.version == version }?.keyId ?? configured, version: version)
    }
}
