import XCTest
import Synchronization
import CMKCrypto
import CMKKeys
@testable import CMKKeyService

/// A provider stand-in for the cache's logic only (real providers are tested in CMKKeysTests and
/// through real mounts): counts state checks and answers what the test sets.
final class FakeProvider: KeyProvider, @unchecked Sendable {
    // Sound: `answer` and `checks` are only touched under `lock`.
    let lock = NSLock()
    var answer: Result<ProviderKeyState, KeyProviderError> = .success(.enabled)
    var checks = 0
    var kind: String { "fake" }
    func createKey() throws(KeyProviderError) -> KeyRef { KeyRef(keyID: "k", version: 1) }
    func createVersion(of keyID: String) throws(KeyProviderError) -> KeyRef { KeyRef(keyID: keyID, version: 2) }
    func wrap(_ dek: SecretBytes, with key: KeyRef, context: WrapContext) throws(KeyProviderError) -> [UInt8] { [] }
    func unwrap(_ edek: [UInt8], with key: KeyRef, context: WrapContext) throws(KeyProviderError) -> SecretBytes {
        SecretBytes(zeroedCount: 32)
    }
    func state(of key: KeyRef) throws(KeyProviderError) -> ProviderKeyState {
        lock.lock(); defer { lock.unlock() }
        checks += 1
        return try answer.get()
    }
    func setState(_ state: ProviderKeyState, of key: KeyRef) throws(KeyProviderError) {}
}

/// A clock the test moves by hand.
final class TestClock: Sendable {
    let now = Mutex(1000.0)
    func advance(_ seconds: Double) { now.withLock { $0 += seconds } }
    var read: @Sendable () -> Double { { [self] in now.withLock { $0 } } }
}

final class KeyCacheTests: XCTestCase {
    let ref = KeyRef(keyID: "mk-test", version: 1)

    func makeCache(_ policy: CachePolicy, _ provider: FakeProvider = FakeProvider(), _ clock: TestClock = TestClock()) -> KeyCache {
        KeyCache(policy: policy, provider: provider, clock: clock.read)
    }

    func id(_ n: Int) -> [UInt8] { (0..<16).map { UInt8(truncatingIfNeeded: n >> ($0 % 4 * 8)) ^ UInt8($0) } }

    func testHitAfterMissMakesOneProviderCall() throws {
        let cache = makeCache(CachePolicy())
        var loads = 0
        let a = try cache.lease(for: id(1)) { loads += 1; return (try SecretBytes.random(count: 32), ref) }
        let b = try cache.lease(for: id(1)) { loads += 1; return (try SecretBytes.random(count: 32), ref) }
        XCTAssertTrue(a === b)
        XCTAssertEqual(loads, 1)
        let stats = cache.stats()
        XCTAssertEqual(stats.hits, 1)
        XCTAssertEqual(stats.misses, 1)
        XCTAssertEqual(stats.entries, 1)
    }

    /// Sixteen threads miss one file at once: one load, the others wait for it. The load holds
    /// until every thread has asked (not for a fixed time), so the misses really overlap.
    func testConcurrentMissesForOneFileLoadOnce() throws {
        final class Counts: Sendable { let loads = Mutex(0), asked = Mutex(0) }
        let cache = makeCache(CachePolicy())
        let counts = Counts()
        let fileID = id(7), ref = self.ref
        let done = DispatchGroup()
        for _ in 0..<16 {
            done.enter()
            Thread.detachNewThread {
                counts.asked.withLock { $0 += 1 }
                _ = try? cache.lease(for: fileID) {
                    counts.loads.withLock { $0 += 1 }
                    let deadline = Date().addingTimeInterval(30)
                    while counts.asked.withLock({ $0 }) < 16 && Date() < deadline { Thread.sleep(forTimeInterval: 0.001) }
                    return (try SecretBytes.random(count: 32), ref)
                }
                done.leave()
            }
        }
        XCTAssertEqual(done.wait(timeout: .now() + 60), .success, "a lease never returned")
        XCTAssertEqual(counts.asked.withLock { $0 }, 16)
        XCTAssertEqual(counts.loads.withLock { $0 }, 1)
    }

    func testFailedLoadIsNotCachedAndPropagates() {
        let cache = makeCache(CachePolicy())
        XCTAssertThrowsError(try cache.lease(for: id(2)) { throw KeyProviderError.keyDisabled(ref) })
        XCTAssertEqual(cache.stats().entries, 0)
    }

    func testIdleEntriesAreSweptButPinnedOnesStay() throws {
        let clock = TestClock()
        let cache = makeCache(CachePolicy(idleTTL: 10, maxLifetime: 1000, leaseRenew: 100, capacity: 100), FakeProvider(), clock)
        let pinned = try cache.lease(for: id(1)) { (try SecretBytes.random(count: 32), ref) }
        let idle = try cache.lease(for: id(2)) { (try SecretBytes.random(count: 32), ref) }
        cache.unpin(idle)
        clock.advance(11)
        cache.sweep()
        XCTAssertTrue(pinned.isLive)
        XCTAssertFalse(idle.isLive, "an idle unpinned key is dropped and wiped")
        XCTAssertEqual(cache.stats().entries, 1)
    }

    func testCapacityEvictsLeastRecentlyUsedUnpinned() throws {
        let clock = TestClock()
        let cache = makeCache(CachePolicy(idleTTL: 1000, maxLifetime: 1000, leaseRenew: 100, capacity: 100), FakeProvider(), clock)
        var leases: [KeyLease] = []
        for n in 0..<10_000 {
            clock.advance(0.001)
            let lease = cache.lease(for: id(n)) { (SecretBytes(zeroedCount: 32), ref) }
            cache.unpin(lease)
            leases.append(lease)
            XCTAssertLessThanOrEqual(cache.stats().entries, 100)
        }
        XCTAssertTrue(leases.last!.isLive)
        XCTAssertFalse(leases.first!.isLive, "the oldest was evicted and wiped")
        XCTAssertGreaterThanOrEqual(cache.stats().evictions, 9_900)
        XCTAssertLessThan(cache.stats().evictions, 10_000)
    }

    /// A miss on a full cache evicts one key, the least recently leased: not an eighth of the
    /// cache at once (the former sorting pass dropped 4,096 keys at the default capacity, each
    /// an unwrap again at its next open, while every open waited on the cache's lock).
    func testFullCacheEvictsOneKeyPerMiss() throws {
        let clock = TestClock()
        let cache = makeCache(CachePolicy(idleTTL: 1000, maxLifetime: 1000, leaseRenew: 100, capacity: 64), FakeProvider(), clock)
        var leases: [KeyLease] = []
        for n in 0..<64 {
            clock.advance(0.001)
            let lease = cache.lease(for: id(n)) { (SecretBytes(zeroedCount: 32), ref) }
            cache.unpin(lease)
            leases.append(lease)
        }
        XCTAssertEqual(cache.stats().entries, 64)
        clock.advance(0.001)
        cache.unpin(cache.lease(for: id(64)) { (SecretBytes(zeroedCount: 32), ref) })
        XCTAssertEqual(cache.stats().entries, 64, "one key out for one key in")
        XCTAssertEqual(cache.stats().evictions, 1)
        XCTAssertFalse(leases[0].isLive, "the least recently leased key went")
        XCTAssertTrue(leases[1...].allSatisfy(\.isLive))
    }

    /// Eviction goes by the order of leasing: a key leased again (an open that hit) moves to the
    /// front, a pinned key (an open file) is skipped and stays, wherever it is in the order.
    func testEvictionSkipsPinnedAndKeepsRecentlyLeased() throws {
        let clock = TestClock()
        let cache = makeCache(CachePolicy(idleTTL: 1000, maxLifetime: 1000, leaseRenew: 100, capacity: 3), FakeProvider(), clock)
        func lease(_ n: Int) -> KeyLease {
            clock.advance(0.001)
            return cache.lease(for: id(n)) { (SecretBytes(zeroedCount: 32), ref) }
        }
        let pinned = lease(0)                   // stays open
        let a = lease(1); cache.unpin(a)
        let b = lease(2); cache.unpin(b)
        cache.unpin(lease(1))                   // a hit: a is now the most recent
        let c = lease(3); cache.unpin(c)        // over capacity: b is the oldest unpinned
        XCTAssertTrue(pinned.isLive)
        XCTAssertTrue(a.isLive)
        XCTAssertFalse(b.isLive)
        XCTAssertTrue(c.isLive)
        let d = lease(4); cache.unpin(d)        // the pinned key was skipped to the front: a goes
        XCTAssertTrue(pinned.isLive)
        XCTAssertFalse(a.isLive)
        XCTAssertEqual(cache.stats().entries, 3)
        XCTAssertEqual(cache.stats().pinned, 1)
        cache.unpin(pinned)
    }

    func testLeaseExpiresWithoutRenewalAndRenewalExtendsIt() throws {
        let clock = TestClock()
        let provider = FakeProvider()
        let cache = makeCache(CachePolicy(idleTTL: 1000, maxLifetime: 60, leaseRenew: 10, capacity: 10), provider, clock)
        let lease = try cache.lease(for: id(1)) { (try SecretBytes.random(count: 32), ref) }
        clock.advance(50)
        cache.renew()
        XCTAssertEqual(provider.checks, 1)
        clock.advance(50)
        guard case .success = lease.key(now: clock.read()) else { return XCTFail("renewed at 50 s, valid until 110 s") }
        provider.lock.withLock { provider.answer = .failure(.unavailable("down")) }
        cache.renew()
        XCTAssertEqual(cache.stats().provider.state, "unreachable")
        clock.advance(11)
        XCTAssertEqual(lease.key(now: clock.read()).failureValue, .expired)
    }

    func testRenewalFlushesKeysTheProviderDisabled() throws {
        let provider = FakeProvider()
        let cache = makeCache(CachePolicy(), provider)
        let lease = try cache.lease(for: id(1)) { (try SecretBytes.random(count: 32), ref) }
        provider.lock.withLock { provider.answer = .success(.disabled) }
        cache.renew()
        XCTAssertEqual(lease.key(now: 0).failureValue, .revoked)
        XCTAssertEqual(cache.stats().entries, 0)
    }

    /// Every way a key leaves the cache reaches the one drop hook (which the mount uses to cut
    /// the kernel's cached pages): a refused renewal, an expired lease of an open (pinned) file,
    /// and a flush.
    func testEveryDropPathReachesTheDropHook() throws {
        let provider = FakeProvider(), clock = TestClock()
        let cache = makeCache(CachePolicy(idleTTL: 100, maxLifetime: 10, leaseRenew: 1, capacity: 10), provider, clock)
        let seen = Mutex<[[UInt8]]>([])
        cache.onDrop { leases in seen.withLock { $0 += leases.map(\.fileID) } }
        _ = try cache.lease(for: id(1)) { (try SecretBytes.random(count: 32), ref) }
        provider.lock.withLock { provider.answer = .success(.disabled) }
        cache.renew()
        XCTAssertEqual(seen.withLock { $0 }, [id(1)], "renewal refused")
        provider.lock.withLock { provider.answer = .failure(.unavailable("down")) }
        _ = try cache.lease(for: id(2)) { (try SecretBytes.random(count: 32), ref) }
        cache.renew()
        clock.advance(11)
        cache.sweep()
        XCTAssertEqual(seen.withLock { $0 }, [id(1), id(2)], "pinned lease past its lifetime while the provider is down")
        _ = try cache.lease(for: id(3)) { (try SecretBytes.random(count: 32), ref) }
        cache.flush(reason: "test")
        XCTAssertEqual(seen.withLock { $0 }, [id(1), id(2), id(3)], "flush")
    }

    func testFlushByKeyOnlyTouchesThatKey() throws {
        let cache = makeCache(CachePolicy())
        let a = try cache.lease(for: id(1)) { (try SecretBytes.random(count: 32), KeyRef(keyID: "a", version: 1)) }
        let b = try cache.lease(for: id(2)) { (try SecretBytes.random(count: 32), KeyRef(keyID: "b", version: 1)) }
        XCTAssertEqual(cache.flush(keyID: "a", reason: "test").count, 1)
        XCTAssertFalse(a.isLive)
        XCTAssertTrue(b.isLive)
        XCTAssertEqual(cache.stats().flushed, 1)
    }

    func testDurationParsing() {
        XCTAssertEqual(parseDuration("250ms"), 0.25)
        XCTAssertEqual(parseDuration("30s"), 30)
        XCTAssertEqual(parseDuration("5m"), 300)
        XCTAssertEqual(parseDuration("1h"), 3600)
        XCTAssertEqual(parseDuration("12"), 12)
        XCTAssertNil(parseDuration("-1s"))
        XCTAssertNil(parseDuration("soon"))
    }
}

extension Result {
    var failureValue: Failure? { if case .failure(let e) = self { return e } else { return nil } }
}
