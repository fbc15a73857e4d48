/// A provider that re-wraps many EDEKs from one version of a key to another itself, in few
/// requests and without handing the DEKs out (Vault transit's `rewrap` batch endpoint), instead
/// of one unwrap and one wrap per EDEK. `cmkfs key rotate` uses it when the provider has it.
public protocol BatchRewrapping: KeyProvider {
    /// The EDEKs re-wrapped under `to`, in order; nil for an EDEK that did not unwrap under
    /// `from` in its context (tampered or moved row). A refusal of the key or an outage throws:
    /// nothing of the batch is then used.
    func rewrap(_ items: [(edek: [UInt8], context: WrapContext)], from: KeyRef, to: KeyRef) throws(KeyProviderError) -> [[UInt8]?]
}
