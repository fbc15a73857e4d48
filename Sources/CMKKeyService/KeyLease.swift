import Synchronization
import CMKCrypto
import CMKKeys

/// One unwrapped DEK as the mount holds it: usable until revoked, flushed, or past its lease.
///
/// Readers take the key out under a short lock (one uncontended mutex per request) and use it
/// outside; `revoke` drops the lease's reference at once, so the bytes are wiped as soon as the
/// requests already running finish.
public final class KeyLease: Sendable {
    /// The file's id as the cache's key: two words, not a byte array, which would be one more
    /// heap block per cached key (the cache holds up to 32,768 by default).
    let cacheKey: CacheKey
    /// The file's id.
    public var fileID: [UInt8] { cacheKey.bytes }
    /// The master-key version that vouches for this DEK: the one its EDEK is wrapped under.
    /// A rotation moves it to the new version (`KeyCache.relabel`) without touching the DEK.
    public var keyRef: KeyRef { state.withLock { $0.keyRef } }

    struct State {
        var keyRef: KeyRef
        var key: SecretBytes?
        /// Monotonic seconds until which the provider's word holds.
        var expiresAt: Double
        var lastUsed: Double
        var pins = 0
        /// Why the key is gone, once it is.
        var refusal: KeyRefusal?
    }
    let state: Mutex<State>

    init(fileID: [UInt8], keyRef: KeyRef, key: SecretBytes, now: Double, lifetime: Double) {
        self.cacheKey = CacheKey(fileID)
        state = Mutex(State(keyRef: keyRef, key: key, expiresAt: now + lifetime, lastUsed: now))
    }

    /// The DEK for one request, or why it may not be used.
    public func key(now: Double) -> Result<SecretBytes, KeyRefusal> {
        state.withLock { s in
            if let refusal = s.refusal { return .failure(refusal) }
            guard now < s.expiresAt else {
                s.key = nil
                s.refusal = .expired
                return .failure(.expired)
            }
            guard let key = s.key else { return .failure(.revoked) }
            s.lastUsed = now
            return .success(key)
        }
    }

    /// Drops the key for good (flush, revocation, eviction). Returns false if it was gone already.
    @discardableResult
    func revoke(_ why: KeyRefusal) -> Bool {
        state.withLock { s in
            let had = s.key != nil
            s.key = nil
            if s.refusal == nil { s.refusal = why }
            return had
        }
    }

    /// Whether the key is still held (not flushed, revoked or expired).
    public var isLive: Bool { state.withLock { $0.key != nil } }
}

/// Why a cached DEK can no longer be used (the mount decides the errno: CMKFuse/Errno+Mapping.swift).
public enum KeyRefusal: Error, Sendable, Equatable {
    /// The master key was disabled or destroyed (the provider said so, or `cmkfs key revoke`).
    case revoked
    /// The provider has not vouched for the key within the maximum lifetime (unreachable).
    case expired
}
