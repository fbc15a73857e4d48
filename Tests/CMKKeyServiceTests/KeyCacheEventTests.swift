import XCTest
import Synchronization
import CMKCrypto
import CMKKeys
@testable import CMKKeyService

/// The key cache's events as the mount records them: every case's audit event name, result and
/// log severity are pinned here (they are names in the tamper-evident log, docs/audit-format.md),
/// and so is the message text the log and the record's `detail` carry.
final class KeyCacheEventTests: XCTestCase {
    let ref = KeyRef(keyID: "mk-test", version: 2)
    let fileID: [UInt8] = Array(0..<16)

    func testEveryEventKeepsItsAuditNameResultAndSeverity() {
        let events: [(KeyCacheEvent, name: String, result: String, severity: KeyCacheEvent.Severity, message: String)] = [
            (.flushed(count: 3, reason: "control socket"), "flush", "ok", .info, "flush: 3 data keys dropped (control socket)"),
            (.relabelled(count: 2, active: ref), "relabel", "ok", .info,
             "relabel: 2 cached data keys now under the version that wraps them (mk-test v2 active)"),
            (.expired(fileID: fileID, key: ref), "expire", "ok", .info,
             "expire: data key of file 000102030405060708090a0b0c0d0e0f passed its lease (mk-test v2)"),
            (.renewed(key: ref, leases: 5), "renew", "ok", .debug, "renew: mk-test v2 enabled; 5 leases extended"),
            (.renewFailed(key: ref, error: "the KMS is down"), "renew-failed", "error", .warning,
             "renew failed: mk-test v2: the KMS is down; cached keys serve until their lease ends"),
        ]
        for (event, name, result, severity, message) in events {
            XCTAssertEqual(event.auditName, name, "\(event)")
            XCTAssertEqual(event.auditResult, result, "\(event)")
            XCTAssertEqual(event.severity, severity, "\(event)")
            XCTAssertEqual(event.message, message, "\(event)")
        }
    }

    /// The cache reports each thing it does on its own as the matching case.
    func testTheCacheReportsEachEventAsItsCase() throws {
        let provider = FakeProvider(), clock = TestClock()
        let seen = Mutex<[KeyCacheEvent]>([])
        let cache = KeyCache(policy: CachePolicy(idleTTL: 100, maxLifetime: 10, leaseRenew: 1, capacity: 10), provider: provider,
                             clock: clock.read, onEvent: { event in seen.withLock { $0.append(event) } })
        let v1 = KeyRef(keyID: "mk-test", version: 1)
        _ = try cache.lease(for: fileID) { (try SecretBytes.random(count: 32), v1) }
        cache.renew()
        provider.lock.withLock { provider.answer = .failure(.unavailable("down")) }
        cache.renew()
        XCTAssertEqual(cache.relabel(active: ref) { _ in 2 }, 1)
        clock.advance(11)
        cache.sweep()
        cache.flush(reason: "test")
        let names = seen.withLock { $0 }.map(\.auditName)
        XCTAssertEqual(names, ["renew", "renew-failed", "relabel", "expire", "flush"])
        XCTAssertEqual(seen.withLock { $0 }.first, .renewed(key: v1, leases: 1))
    }
}
