import Synchronization
import CMKHTTP
import CMKKeys

/// `cmkfs key rotate --aws-key-id NEW` moves the volume onto another KMS key: the next version
/// is that key (it must exist and be enabled), and ReEncrypt takes each EDEK from the old key to
/// it inside AWS, so the old key can then be disabled or deleted by its owner.
extension AWSKMSProvider: KeySwitching {
    public func adoptKey(_ keyID: String, asVersion version: Int) throws(KeyProviderError) -> KeyRef {
        let key = KeyRef(keyID: keyID, version: version)
        switch try state(of: key) {
        case .enabled: return key
        case .disabled: throw .keyDisabled(key)
        case .destroyed: throw .keyDestroyed(key)
        }
    }
}

/// `cmkfs key rotate` hands a whole batch to the provider: each EDEK is re-encrypted inside AWS
/// (`ReEncrypt`, the DEK never leaves the KMS), 16 requests in flight on threads of their own
/// (blocking HTTP calls would get only one per core from a dispatch queue).
extension AWSKMSProvider: BatchRewrapping {
    public static let rewrapWidth = 16

    public func rewrap(_ items: [(edek: [UInt8], context: WrapContext)], from: KeyRef, to: KeyRef) throws(KeyProviderError) -> [[UInt8]?] {
        let results = Mutex([Result<[UInt8]?, KeyProviderError>](repeating: .success(nil), count: items.count))
        forEachConcurrently(items.count, width: Self.rewrapWidth) { i in
            let item = items[i]
            let outcome: Result<[UInt8]?, KeyProviderError>
            do throws(KeyProviderError) {
                outcome = .success(try self.reEncrypt(item.edek, from: from, to: to, context: item.context))
            } catch {
                // An EDEK that does not decrypt in its context is a bad row, not a refusal.
                if case .unwrapFailed = error { outcome = .success(nil) } else { outcome = .failure(error) }
            }
            results.withLock { $0[i] = outcome }
        }
        return try results.withLock { (all) throws(KeyProviderError) -> [[UInt8]?] in
            try all.map { (r) throws(KeyProviderError) -> [UInt8]? in try r.get() }
        }
    }
}
