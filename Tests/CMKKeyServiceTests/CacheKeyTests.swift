import XCTest
import CMKCrypto
import CMKKeys
@testable import CMKKeyService

/// The cache's dictionary key (issue 20): 16-byte ids as two words, any other length whole.
final class CacheKeyTests: XCTestCase {
    func testSixteenByteIDsAreEqualExactlyWhenTheirBytesAre() {
        let a = [UInt8](0..<16), b = [UInt8](0..<16)
        XCTAssertEqual(CacheKey(a), CacheKey(b))
        for i in 0..<16 {
            var c = a
            c[i] ^= 0x80
            XCTAssertNotEqual(CacheKey(a), CacheKey(c), "byte \(i)")
        }
        var seen = Set<CacheKey>()
        for n in 0..<1000 { seen.insert(CacheKey((0..<16).map { UInt8(truncatingIfNeeded: n >> ($0 % 2 == 0 ? 0 : 8)) })) }
        XCTAssertEqual(seen.count, 1000)
    }

    func testOtherLengthsNeverMeetASixteenByteID() {
        let zeros = [UInt8](repeating: 0, count: 16)
        XCTAssertNotEqual(CacheKey(zeros), CacheKey([]))
        XCTAssertNotEqual(CacheKey(zeros), CacheKey([UInt8](repeating: 0, count: 15)))
        XCTAssertNotEqual(CacheKey(zeros), CacheKey([UInt8](repeating: 0, count: 17)))
        XCTAssertEqual(CacheKey([1, 2, 3]), CacheKey([1, 2, 3]))
        XCTAssertNotEqual(CacheKey([1, 2, 3]), CacheKey([1, 2, 4]))
    }

    /// A lease keeps its file id as the cache key's two words and gives the same bytes back.
    func testBytesGiveBackTheIDItWasMadeFrom() {
        for id in [[UInt8](0..<16), [UInt8](repeating: 0xFF, count: 16), [], [7], [UInt8](0..<15), [UInt8](0..<17)] {
            XCTAssertEqual(CacheKey(id).bytes, id)
        }
    }
}

/// Cached leases share one copy of their master key's id (issue 20: memory per cached key).
final class KeyIDInterningTests: XCTestCase {
    func testLeasesOfOneMasterKeyShareItsIDsStorage() throws {
        let cache = KeyCache(policy: CachePolicy(), provider: FakeProvider())
        // A fresh copy per load, as each meta.db read gives.
        func freshRef() -> KeyRef { KeyRef(keyID: String(decoding: Array("mk-0123456789abcdef-long".utf8), as: UTF8.self), version: 1) }
        let leases = try (0..<3).map { n in
            try cache.lease(for: (0..<16).map { UInt8(n * 16 + $0) }) { (try SecretBytes.random(count: 32), freshRef()) }
        }
        func storage(_ lease: KeyLease) -> UnsafeRawPointer? {
            var id = lease.keyRef.keyID
            return id.withUTF8 { UnsafeRawPointer($0.baseAddress) }
        }
        XCTAssertEqual(leases.map { $0.keyRef }, Array(repeating: freshRef(), count: 3))
        XCTAssertEqual(storage(leases[1]), storage(leases[0]))
        XCTAssertEqual(storage(leases[2]), storage(leases[0]))
    }
}
