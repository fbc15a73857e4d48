import Foundation
import Synchronization
import CMKCrypto
import CMKKeys

/// The mount's cache of unwrapped DEKs: idle TTL, maximum lifetime, LRU capacity, leasing with
/// background renewal, and flushes (the kill switch). Evicted keys are wiped.
///
/// A hit takes one mutex for a dictionary lookup. A miss calls the provider with no lock held;
/// concurrent misses for one file wait for the first one's provider call (single flight), misses
/// for different files run in parallel.
public final class KeyCache: Sendable {
    public let policy: CachePolicy
    let provider: any KeyProvider
    let clock: @Sendable () -> Double
    let onEvent: @Sendable (KeyCacheEvent) -> Void

    struct State {
        /// The cached leases, in the order they were last leased.
        var entries = LeaseTable()
        var loading: [CacheKey: Loading] = [:]
        var hits = 0, misses = 0, evictions = 0, flushed = 0, expired = 0
        var health = ProviderHealth(state: "unchecked", checkedAt: nil, detail: nil)
        /// One copy of each master-key id the cached leases name: each provider answer brings its
        /// own copy (read from meta.db), a heap block per cached key that all say the same few ids.
        var keyIDs: Set<String> = []

        /// `ref` naming the cache's own copy of its key id.
        mutating func interned(_ ref: KeyRef) -> KeyRef {
            if let known = keyIDs.firstIndex(of: ref.keyID) { return KeyRef(keyID: keyIDs[known], version: ref.version) }
            // Bounded: a volume has a handful of master keys; past that, ids are kept as they come.
            if keyIDs.count < 64 { keyIDs.insert(ref.keyID) }
            return ref
        }
    }
    let state = Mutex(State())
    /// Told of every lease that `flush` or `sweep` takes out of the cache, after its key is
    /// dropped: the mount cuts the kernel's cached pages of the files using them.
    private let dropHandler = Mutex<(@Sendable ([KeyLease]) -> Void)?>(nil)

    public init(policy: CachePolicy, provider: any KeyProvider,
                clock: @escaping @Sendable () -> Double = monotonicNow,
                onEvent: @escaping @Sendable (KeyCacheEvent) -> Void = { _ in }) {
        self.policy = policy
        self.provider = provider
        self.clock = clock
        self.onEvent = onEvent
    }

    /// The lease of `fileID`'s DEK, pinned (call `unpin` when the file closes); `load` unwraps
    /// it through the provider on a miss and returns the key with the master-key version. A
    /// failed load throws `load`'s own error, unchanged; callers waiting on that load get it too
    /// (a waiter whose `load` has another error type loads for itself instead).
    public func lease<E: Error>(for fileID: [UInt8], load: () throws(E) -> (SecretBytes, KeyRef)) throws(E) -> KeyLease {
        let key = CacheKey(fileID)
        while true {
            let step: LeaseStep = state.withLock { s in
                if let lease = s.entries[key], lease.isLive {
                    s.hits += 1
                    s.entries.touch(key)
                    lease.state.withLock { $0.pins += 1; $0.lastUsed = clock() }
                    return .hit(lease)
                }
                if let loading = s.loading[key] { return .wait(loading) }
                let loading = Loading()
                s.loading[key] = loading
                return .load(loading)
            }
            switch step {
            case .hit(let lease):
                return lease
            case .wait(let loading):
                if let error = loading.wait(), let same = error as? E { throw same }
                continue
            case .load(let loading):
                let loaded: (SecretBytes, KeyRef)
                do { loaded = try load() } catch {
                    _ = state.withLock { $0.loading.removeValue(forKey: key) }
                    loading.finish(error)
                    throw error
                }
                let now = clock()
                let ref = state.withLock { $0.interned(loaded.1) }
                let lease = KeyLease(fileID: fileID, keyRef: ref, key: loaded.0, now: now, lifetime: policy.maxLifetime)
                lease.state.withLock { $0.pins = 1 }
                let evicted: [KeyLease] = state.withLock { s in
                    s.misses += 1
                    s.entries.insert(lease)?.revoke(.revoked)
                    s.loading[key] = nil
                    return evictOverCapacity(&s)
                }
                loading.finish(nil)
                evicted.forEach { $0.revoke(.revoked) }
                return lease
            }
        }
    }

    /// Sets what runs after `flush` or `sweep` dropped keys (renewal refused, lifetime expired,
    /// idle, revocation, flush): one hook, so every way a key leaves the cache cuts the same things.
    /// It runs on the thread that dropped them (the control or the maintenance thread), never on
    /// a thread serving a file request.
    public func onDrop(_ handler: @escaping @Sendable ([KeyLease]) -> Void) {
        dropHandler.withLock { $0 = handler }
    }

    private func notifyDropped(_ leases: [KeyLease]) {
        guard !leases.isEmpty, let handler = dropHandler.withLock({ $0 }) else { return }
        handler(leases)
    }

    /// Puts a new DEK for `fileID` in place of the cached one (after a rekey) and returns its
    /// lease, pinned. The old entry's key is dropped (wiped once its last user lets go): the
    /// caller has already moved every holder of the old lease to the new one.
    public func replace(fileID: [UInt8], key: SecretBytes, keyRef: KeyRef) -> KeyLease {
        let now = clock()
        let lease = KeyLease(fileID: fileID, keyRef: keyRef, key: key, now: now, lifetime: policy.maxLifetime)
        lease.state.withLock { $0.pins = 1 }
        let old = state.withLock { s in s.entries.insert(lease) }
        old?.revoke(.revoked)
        return lease
    }

    /// The file that pinned `lease` closed.
    public func unpin(_ lease: KeyLease) {
        lease.state.withLock { $0.pins = max(0, $0.pins - 1) }
    }

    /// The least recently leased unpinned entries, out of the table once the capacity is passed:
    /// one per miss on a full cache, in O(1) (`LeaseTable`).
    private func evictOverCapacity(_ s: inout State) -> [KeyLease] {
        guard s.entries.count > policy.capacity else { return [] }
        let out = s.entries.evict(downTo: policy.capacity) { lease in lease.state.withLock { $0.pins > 0 } }
        s.evictions += out.count
        return out
    }

    /// Drops every DEK wrapped under `keyID` (all versions, or one): the kill switch. Returns the
    /// leases that were live, so the mount can cut their open files.
    @discardableResult
    public func flush(keyID: String? = nil, version: Int? = nil, reason: String) -> [KeyLease] {
        let matching: [KeyLease] = state.withLock { s in
            let hit = s.entries.leases.filter { lease in
                (keyID == nil || lease.keyRef.keyID == keyID) && (version == nil || lease.keyRef.version == version)
            }
            for lease in hit { s.entries.remove(lease.cacheKey) }
            s.flushed += hit.count
            return hit
        }
        let live = matching.filter { $0.revoke(.revoked) }
        onEvent(.flushed(count: live.count, reason: reason))
        notifyDropped(matching)
        return live
    }

    /// After a rotation re-wrapped EDEKs: each live entry not under `active` asks `currentVersion`
    /// which version its file's EDEK is under now, and moves to it, so renewal asks the provider
    /// about the version that actually protects the file and a purge of the old version does not
    /// cut files that no longer depend on it. Returns how many moved.
    @discardableResult
    public func relabel(active: KeyRef, currentVersion: ([UInt8]) -> Int?) -> Int {
        let stale = state.withLock { s in s.entries.leases.filter { $0.isLive && $0.keyRef != active } }
        var moved = 0
        for lease in stale {
            guard let version = currentVersion(lease.fileID) else { continue }
            let changed = lease.state.withLock { l in
                guard l.keyRef.version != version else { return false }
                // The active version may be another provider key (a rotation onto a new KMS key).
                l.keyRef = version == active.version ? active : KeyRef(keyID: l.keyRef.keyID, version: version)
                return true
            }
            if changed { moved += 1 }
        }
        if moved > 0 { onEvent(.relabelled(count: moved, active: active)) }
        return moved
    }

    /// Idle and expired entries out (wiped). Pinned entries stay until their files close.
    public func sweep() {
        let now = clock()
        let dropped: [KeyLease] = state.withLock { s in
            let old = s.entries.leases.filter { lease in
                lease.state.withLock { l in
                    l.key == nil || now >= l.expiresAt || (l.pins == 0 && now - l.lastUsed >= policy.idleTTL)
                }
            }
            for lease in old { s.entries.remove(lease.cacheKey) }
            s.evictions += old.count
            return old
        }
        for lease in dropped {
            if lease.state.withLock({ $0.key != nil && now >= $0.expiresAt }) {
                state.withLock { $0.expired += 1 }
                onEvent(.expired(fileID: lease.fileID, key: lease.keyRef))
            }
            lease.revoke(.expired)
        }
        notifyDropped(dropped)
    }

    /// Re-checks every master-key version in use with the provider: renews the leases of keys
    /// still enabled, flushes those disabled or destroyed, and lets leases run out while the
    /// provider cannot be reached.
    public func renew() {
        let keys = state.withLock { s in Set(s.entries.leases.filter(\.isLive).map(\.keyRef)) }
        for key in keys {
            let now = clock()
            do {
                let keyState = try provider.state(of: key)
                if keyState == .enabled {
                    let renewed = state.withLock { s in
                        s.health = ProviderHealth(state: "ok", checkedAt: now, detail: nil)
                        return s.entries.leases.filter { $0.keyRef == key }
                    }
                    for lease in renewed { lease.state.withLock { $0.expiresAt = now + policy.maxLifetime } }
                    onEvent(.renewed(key: key, leases: renewed.count))
                } else {
                    state.withLock { $0.health = ProviderHealth(state: "ok", checkedAt: now, detail: "\(key) \(keyState.rawValue)") }
                    flush(keyID: key.keyID, version: key.version, reason: "provider reports \(key) \(keyState.rawValue)")
                }
            } catch {
                switch error {
                case .keyDisabled, .keyDestroyed, .keyNotFound, .accessDenied:
                    flush(keyID: key.keyID, version: key.version, reason: "provider refused: \(error)")
                default:
                    state.withLock { $0.health = ProviderHealth(state: "unreachable", checkedAt: now, detail: "\(error)") }
                    onEvent(.renewFailed(key: key, error: "\(error)"))
                }
            }
        }
    }

    /// Runs `sweep` and `renew` on a background thread until the process ends.
    public func startMaintenance() {
        let tick = max(0.05, min(1.0, policy.leaseRenew, policy.idleTTL))
        Thread.detachNewThread { [self] in
            var nextRenew = clock() + policy.leaseRenew
            while true {
                Thread.sleep(forTimeInterval: tick)
                sweep()
                if clock() >= nextRenew {
                    renew()
                    nextRenew = clock() + policy.leaseRenew
                }
            }
        }
    }

    /// Whether a live key for `fileID` is cached now; loads nothing and counts no hit (`cmkfs info`).
    public func isCached(_ fileID: [UInt8]) -> Bool {
        state.withLock { $0.entries[CacheKey(fileID)]?.isLive ?? false }
    }

    public func stats() -> CacheStats {
        let now = clock()
        return state.withLock { s in
            let live = s.entries.leases.filter(\.isLive)
            let oldest = live.map { l in l.state.withLock { now - ($0.expiresAt - policy.maxLifetime) } }.max()
            return CacheStats(entries: live.count, pinned: live.filter { l in l.state.withLock { $0.pins > 0 } }.count,
                              capacity: policy.capacity, hits: s.hits, misses: s.misses, evictions: s.evictions,
                              flushed: s.flushed, expired: s.expired, oldestLeaseAgeSeconds: oldest,
                              idleTTLSeconds: policy.idleTTL, maxLifetimeSeconds: policy.maxLifetime,
                              leaseRenewSeconds: policy.leaseRenew,
                              provider: ProviderHealth(state: s.health.state,
                                                       checkedAt: s.health.checkedAt.map { now - $0 },
                                                       detail: s.health.detail))
        }
    }
}

/// What `cmkfs cache stats` shows.
public struct CacheStats: Codable, Sendable {
    /// The version of this JSON shape (`cmkfs cache stats --json`, docs/json.md).
    public var format = 1
    public var entries, pinned, capacity, hits, misses, evictions, flushed, expired: Int
    /// Seconds since the oldest live lease was last vouched for by the provider.
    public var oldestLeaseAgeSeconds: Double?
    public var idleTTLSeconds, maxLifetimeSeconds, leaseRenewSeconds: Double
    public var provider: ProviderHealth

    enum CodingKeys: String, CodingKey {
        case format, entries, pinned, capacity, hits, misses, evictions, flushed, expired
        case oldestLeaseAgeSeconds = "oldest_lease_age_s", idleTTLSeconds = "idle_ttl_s"
        case maxLifetimeSeconds = "max_lifetime_s", leaseRenewSeconds = "lease_renew_s", provider
    }
}

/// The provider as the last renewal saw it.
public struct ProviderHealth: Codable, Sendable {
    /// "unchecked", "ok" or "unreachable".
    public var state: String
    /// Seconds ago (in stats); monotonic time inside the cache.
    public var checkedAt: Double?
    public var detail: String?

    enum CodingKeys: String, CodingKey { case state, checkedAt = "checked_s_ago", detail }
}

/// A file id as the cache's dictionary key. A 16-byte id (every file's, and the name key's) is
/// two words, hashed in two steps; `[UInt8]` as a key hashed its length and each byte, 17 steps
/// per lookup, several lookups per open (issue 20). Any other length (tests) is kept whole.
struct CacheKey: Hashable {
    let high: UInt64
    let low: UInt64
    let other: [UInt8]?

    init(_ fileID: [UInt8]) {
        if fileID.count == 16 {
            (high, low) = fileID.withUnsafeBytes { ($0.loadUnaligned(as: UInt64.self), $0.loadUnaligned(fromByteOffset: 8, as: UInt64.self)) }
            other = nil
        } else {
            (high, low, other) = (0, 0, fileID)
        }
    }

    /// The file id it was made from.
    var bytes: [UInt8] {
        if let other { return other }
        var words = (high, low)
        return withUnsafeBytes(of: &words) { Array($0) }
    }
}

/// A provider call in progress for one file; others missing on the same file wait for it.
/// What `lease` does next for a file id: take the live lease, wait for another caller's load,
/// or load itself.
private enum LeaseStep { case hit(KeyLease), wait(Loading), load(Loading) }

final class Loading: @unchecked Sendable {
    // Sound: `done` and `error` are read and written only while holding `condition`.
    private let condition = NSCondition()
    private var done = false
    private var error: Error?

    func wait() -> Error? {
        condition.lock()
        defer { condition.unlock() }
        while !done { condition.wait() }
        return error
    }

    func finish(_ error: Error?) {
        condition.lock()
        self.error = error
        done = true
        condition.broadcast()
        condition.unlock()
    }
}

/// Seconds on the monotonic clock.
@Sendable public func monotonicNow() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

func hexString(_ bytes: [UInt8]) -> String { bytes.map { String(format: "%02x", $0) }.joined() }
