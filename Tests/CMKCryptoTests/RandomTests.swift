import XCTest
@testable import CMKCrypto

final class RandomTests: XCTestCase {
    func testSecureRandomBytesLengths() throws {
        for length in [0, 1, 2, 12, 16, 32, 100, 4095, 4096, 4097, 70_000] {
            XCTAssertEqual(try SecureRandom.bytes(length).count, length)
        }
        let a = try SecureRandom.bytes(32), b = try SecureRandom.bytes(32)
        XCTAssertNotEqual(a, b)
        XCTAssertNotEqual(a, [UInt8](repeating: 0, count: 32))
        // Not stuck on one value: a large draw uses (nearly) every byte value.
        XCTAssertGreaterThan(Set(try SecureRandom.bytes(70_000)).count, 250)
    }

    func testSecureRandomFillWritesOnlyTheBuffer() throws {
        var bytes = [UInt8](repeating: 0, count: 64)
        try bytes.withUnsafeMutableBytes { try SecureRandom.fill(UnsafeMutableRawBufferPointer(rebasing: $0[16..<48])) }
        XCTAssertEqual(Array(bytes[0..<16]), [UInt8](repeating: 0, count: 16))
        XCTAssertEqual(Array(bytes[48...]), [UInt8](repeating: 0, count: 16))
        XCTAssertNotEqual(Array(bytes[16..<48]), [UInt8](repeating: 0, count: 32))
        try SecureRandom.fill(UnsafeMutableRawBufferPointer(start: nil, count: 0))
    }

    func testNonceSourceGivesDistinctNonZeroNoncesAcrossRefills() throws {
        XCTAssertEqual(NonceSource.nonceSize, 12)
        var source = NonceSource()
        var seen = Set<[UInt8]>()
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 32, alignment: 16)
        defer { buffer.deallocate() }
        let zero = [UInt8](repeating: 0, count: 12)
        // 10,000 nonces is ~29 batches of 341: many refills.
        for i in 0..<10_000 {
            buffer.initializeMemory(as: UInt8.self, repeating: 0x5A)
            try source.fill(buffer.baseAddress! + 4)
            let nonce = Array(buffer[4..<16])
            // Exactly 12 bytes written, nothing around them.
            XCTAssertEqual(Array(buffer[0..<4]), [0x5A, 0x5A, 0x5A, 0x5A], "nonce \(i) wrote before its start")
            XCTAssertEqual(Array(buffer[16..<32]), [UInt8](repeating: 0x5A, count: 16), "nonce \(i) wrote past 12 bytes")
            XCTAssertNotEqual(nonce, zero, "nonce \(i) is all zero")
            XCTAssertTrue(seen.insert(nonce).inserted, "nonce \(i) repeated")
        }
        XCTAssertEqual(seen.count, 10_000)
    }

    func testTwoNonceSourcesDoNotRepeatEachOther() throws {
        var a = NonceSource(), b = NonceSource()
        var seen = Set<[UInt8]>()
        var nonce = [UInt8](repeating: 0, count: 12)
        for _ in 0..<1000 {
            try nonce.withUnsafeMutableBytes { try a.fill($0.baseAddress!) }
            XCTAssertTrue(seen.insert(nonce).inserted)
            try nonce.withUnsafeMutableBytes { try b.fill($0.baseAddress!) }
            XCTAssertTrue(seen.insert(nonce).inserted)
        }
    }
}
