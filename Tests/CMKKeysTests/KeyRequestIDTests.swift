import XCTest
import Synchronization
import Dispatch
@testable import CMKKeys

/// Request ids (issue 20): a random per-process prefix and a counter instead of 16 random bytes
/// per request, still 32 lower-case hex digits and never repeated.
final class KeyRequestIDTests: XCTestCase {
    func testIDsAre32LowerCaseHexDigitsAndNeverRepeat() {
        var seen = Set<String>()
        for _ in 0..<20_000 {
            let id = KeyRequest.newID()
            XCTAssertEqual(id.utf8.count, 32)
            XCTAssertTrue(id.utf8.allSatisfy { (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }, id)
            XCTAssertTrue(seen.insert(id).inserted, "repeated id \(id)")
        }
    }

    /// One random draw per process: every id shares the process's prefix and the rest counts up,
    /// so a key-miss open draws no randomness.
    func testIDsShareTheProcessPrefixAndCountUp() throws {
        let a = KeyRequest.newID(), b = KeyRequest.newID()
        XCTAssertEqual(a.prefix(16), b.prefix(16), "ids of one process have one random prefix")
        let prefix = KeyRequest.hex(KeyRequest.idPrefix, 0).prefix(16)
        XCTAssertEqual(a.prefix(16), prefix)
        let na = try XCTUnwrap(UInt64(a.suffix(16), radix: 16)), nb = try XCTUnwrap(UInt64(b.suffix(16), radix: 16))
        XCTAssertGreaterThan(nb, na)
    }

    func testIDsFromManyThreadsAreDistinct() {
        let ids = Mutex<Set<String>>([])
        DispatchQueue.concurrentPerform(iterations: 8) { _ in
            var mine: [String] = []
            for _ in 0..<2_000 { mine.append(KeyRequest.newID()) }
            ids.withLock { $0.formUnion(mine) }
        }
        XCTAssertEqual(ids.withLock { $0.count }, 16_000)
    }

    func testHexSpellsBothHalves() {
        XCTAssertEqual(KeyRequest.hex(0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210), "0123456789abcdeffedcba9876543210")
    }
}

/// The binding's bytes are part of every EDEK ever written: pinned byte for byte.
final class AssociatedDataTests: XCTestCase {
    func testAssociatedDataBytesAreUnchanged() {
        let aad = WrapContext(volumeID: [0xA1, 0xA2], fileID: [0x01, 0x02, 0x03]).associatedData(for: KeyRef(keyID: "mk-1", version: 0x0102_0304))
        XCTAssertEqual(aad, Array("cmkfs.edek.v1".utf8) + [0, 4] + Array("mk-1".utf8) + [1, 2, 3, 4] + [2, 0xA1, 0xA2] + [3, 1, 2, 3])
    }
}
