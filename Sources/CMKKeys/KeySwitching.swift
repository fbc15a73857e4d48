/// A provider whose master-key versions are labels over keys of its own (AWS KMS), so that a
/// rotation can move a volume onto another of its keys: the next version *is* that key, and
/// every EDEK is re-wrapped into it (`cmkfs key rotate --aws-key-id`). Providers whose EDEKs
/// name the provider key's own version (Vault transit: `vault:vN:…`) cannot: a new key starts
/// again at its version 1, which the volume already numbers.
public protocol KeySwitching: KeyProvider {
    /// `keyID` as version `version` of the volume's master key. It must exist and be enabled;
    /// nothing is created or changed in the provider.
    func adoptKey(_ keyID: String, asVersion version: Int) throws(KeyProviderError) -> KeyRef
}
