import Dispatch
import Synchronization
import XCTest
@testable import CMKCrypto

/// `AESGCM.Pool`: contexts reused, never used by two threads at once, records that open.
final class AESGCMPoolTests: XCTestCase {
    func testSequentialCallsReuseOneContext() throws {
        let pool = AESGCM.Pool()
        let key = [UInt8](repeating: 7, count: 32)
        var seen = Set<ObjectIdentifier>()
        for i in 0..<20 {
            let plain = Array("path \(i)".utf8)
            let sealed = try pool.with { gcm in
                seen.insert(ObjectIdentifier(gcm))
                return try key.withUnsafeBytes { k in
                    try plain.withUnsafeBytes { p in try gcm.sealRecord(key: k, aad: [1], plaintext: p) }
                }
            }
            let opened = try key.withUnsafeBytes { k in try AESGCM().openRecord(key: k, aad: [1], record: sealed) }
            XCTAssertEqual(opened.withUnsafeBytes { Array($0) }, plain)
        }
        XCTAssertEqual(seen.count, 1)
        XCTAssertEqual(pool.idleCount, 1)
    }

    /// Threads at once each hold a context of their own (a shared one would mix their keys
    /// and nonces: records would not open), and the pool keeps at most its limit idle.
    func testConcurrentCallersNeverShareAContext() throws {
        let pool = AESGCM.Pool(limit: 3)
        let failures = Atomic(0)
        let inUse = Mutex(Set<ObjectIdentifier>())
        DispatchQueue.concurrentPerform(iterations: 8) { t in
            let key = [UInt8](repeating: UInt8(t + 1), count: 32)
            for i in 0..<300 {
                let plain = Array("thread \(t) record \(i)".utf8)
                let ok: Bool = (try? pool.with { gcm -> Bool in
                    let id = ObjectIdentifier(gcm)
                    guard inUse.withLock({ $0.insert(id).inserted }) else { return false }
                    defer { _ = inUse.withLock { $0.remove(id) } }
                    let sealed = try key.withUnsafeBytes { k in
                        try plain.withUnsafeBytes { p in try gcm.sealRecord(key: k, aad: [], plaintext: p) }
                    }
                    let opened = try key.withUnsafeBytes { k in try gcm.openRecord(key: k, aad: [], record: sealed) }
                    return opened.withUnsafeBytes { Array($0) } == plain
                }) ?? false
                if !ok { failures.add(1, ordering: .relaxed) }
            }
        }
        XCTAssertEqual(failures.load(ordering: .relaxed), 0)
        XCTAssertLessThanOrEqual(pool.idleCount, 3)
    }
}
