import XCTest
import CMKCrypto
@testable import CMKFormat

final class FileHeaderTests: XCTestCase {
    let id = FileID(bytes: Array(0x10..<0x20))!

    private func decode(_ bytes: [UInt8]) throws -> FileID {
        try bytes.withUnsafeBytes { try FileHeader.decode($0) }
    }

    private func assertCorruptHeader(_ bytes: [UInt8], _ message: String, file: StaticString = #filePath, line: UInt = #line) {
        guard let error = expectContentError({ try decode(bytes) }, message, file: file, line: line) else { return }
        guard case .corruptHeader = error else { return XCTFail("expected corruptHeader, got \(error)", file: file, line: line) }
    }

    func testEncodeLayout() {
        let bytes = FileHeader.encode(id)
        XCTAssertEqual(bytes.count, 24)
        XCTAssertEqual(Array(bytes[0..<4]), Array("CMKF".utf8))
        XCTAssertEqual(Array(bytes[4..<6]), [0, 1])
        XCTAssertEqual(Array(bytes[6..<8]), [0, 0])
        XCTAssertEqual(Array(bytes[8..<24]), id.bytes)
        XCTAssertEqual(FileHeader.version, 1)
    }

    func testRoundTrip() throws {
        XCTAssertEqual(try decode(FileHeader.encode(id)), id)
        for _ in 0..<50 {
            let random = try FileID.random()
            XCTAssertEqual(try decode(FileHeader.encode(random)), random)
        }
    }

    func testBadMagic() {
        for i in 0..<4 {
            var bytes = FileHeader.encode(id)
            bytes[i] ^= 0x20
            assertCorruptHeader(bytes, "magic byte \(i)")
        }
        assertCorruptHeader([UInt8](repeating: 0, count: 24), "all zero")
    }

    func testBadVersion() {
        for version: [UInt8] in [[0, 0], [0, 2], [1, 1], [0xFF, 0xFF]] {
            var bytes = FileHeader.encode(id)
            bytes[4] = version[0]
            bytes[5] = version[1]
            assertCorruptHeader(bytes, "version \(version)")
        }
    }

    func testShortHeader() {
        let bytes = FileHeader.encode(id)
        for length in [0, 1, 4, 8, 23] { assertCorruptHeader(Array(bytes.prefix(length)), "length \(length)") }
    }

    func testFileIDInitAndHex() throws {
        XCTAssertNil(FileID(bytes: []))
        XCTAssertNil(FileID(bytes: [UInt8](repeating: 1, count: 15)))
        XCTAssertNil(FileID(bytes: [UInt8](repeating: 1, count: 17)))
        XCTAssertEqual(FileID.size, 16)
        XCTAssertEqual(id.description, "101112131415161718191a1b1c1d1e1f")
        XCTAssertEqual("\(FileID(bytes: [UInt8](repeating: 0, count: 16))!)", String(repeating: "0", count: 32))
        let a = try FileID.random(), b = try FileID.random()
        XCTAssertNotEqual(a, b)
        XCTAssertEqual(a.description.count, 32)
        XCTAssertEqual(unhex(a.description), a.bytes)
        XCTAssertEqual(Set([a, b, a]).count, 2)
    }

    func testHexAndUnhex() {
        XCTAssertEqual(hex([]), "")
        XCTAssertEqual(hex([0x00, 0xFF, 0x1A, 0xA1, 0x09]), "00ff1aa109")
        XCTAssertEqual(hex(Array(0...255)).count, 512)
        XCTAssertEqual(unhex(""), [])
        XCTAssertEqual(unhex("00ff1aA1"), [0x00, 0xFF, 0x1A, 0xA1])
        XCTAssertEqual(unhex("ABCDEF"), [0xAB, 0xCD, 0xEF])
        XCTAssertEqual(unhex(hex(Array(0...255))), Array(0...255))
        for bad in ["0", "abc", "0g", "g0", "zz", " 00", "00 ", "0x00", "-1", "é0"] {
            XCTAssertNil(unhex(bad), bad)
        }
        var rng = SplitMix64(seed: 7)
        for _ in 0..<100 {
            let bytes = rng.bytes(rng.int(0...40))
            XCTAssertEqual(unhex(hex(bytes)), bytes)
            XCTAssertEqual(unhex(hex(bytes).uppercased()), bytes)
        }
    }
}
