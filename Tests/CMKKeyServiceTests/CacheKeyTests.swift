import XCTest
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
}
