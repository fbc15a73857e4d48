import XCTest
@testable import CMKCrypto

final class SecretBytesTests: XCTestCase {
    func testZeroedInit() {
        let s = SecretBytes(zeroedCount: 48)
        XCTAssertEqual(s.count, 48)
        XCTAssertEqual(s.testBytes, [UInt8](repeating: 0, count: 48))
    }

    func testRandomGivesDistinctValues() throws {
        var seen = Set<[UInt8]>()
        for _ in 0..<200 {
            let s = try SecretBytes.random(count: 32)
            XCTAssertEqual(s.count, 32)
            XCTAssertNotEqual(s.testBytes, [UInt8](repeating: 0, count: 32))
            XCTAssertTrue(seen.insert(s.testBytes).inserted, "random secret repeated")
        }
        let a = try SecretBytes.random(count: 32), b = try SecretBytes.random(count: 32)
        XCTAssertFalse(a.constantTimeEquals(b))
        XCTAssertEqual(try SecretBytes.random(count: 1).count, 1)
        XCTAssertEqual(try SecretBytes.random(count: 4096).count, 4096)
    }

    func testConstantTimeEquals() throws {
        let bytes: [UInt8] = (0..<32).map { UInt8($0 * 3) }
        let a = bytes.withUnsafeBytes { SecretBytes(copying: $0) }
        let b = bytes.withUnsafeBytes { SecretBytes(copying: $0) }
        XCTAssertTrue(a.constantTimeEquals(b))
        XCTAssertTrue(b.constantTimeEquals(a))
        XCTAssertTrue(a.constantTimeEquals(a))
        for i in [0, 15, 31] {
            var other = bytes
            other[i] ^= 0x01
            let c = other.withUnsafeBytes { SecretBytes(copying: $0) }
            XCTAssertFalse(a.constantTimeEquals(c), "differs at \(i)")
            XCTAssertFalse(c.constantTimeEquals(a), "differs at \(i)")
        }
        // A prefix is not equal, in either direction.
        let prefix = Array(bytes.prefix(31)).withUnsafeBytes { SecretBytes(copying: $0) }
        XCTAssertFalse(a.constantTimeEquals(prefix))
        XCTAssertFalse(prefix.constantTimeEquals(a))
    }

    func testInitCopyingCopiesAndDetaches() {
        var source: [UInt8] = (0..<32).map { UInt8(0xC0 + $0 % 16) }
        let expected = source
        let s = source.withUnsafeBytes { SecretBytes(copying: $0) }
        XCTAssertEqual(s.count, 32)
        XCTAssertEqual(s.testBytes, expected)
        // Changing or wiping the caller's copy does not touch the secret.
        source.withUnsafeMutableBytes { secureZero($0) }
        XCTAssertEqual(source, [UInt8](repeating: 0, count: 32))
        XCTAssertEqual(s.testBytes, expected)
    }

    func testWithUnsafeMutableBytesWrites() {
        let s = SecretBytes(zeroedCount: 4)
        s.withUnsafeMutableBytes { $0[2] = 9 }
        XCTAssertEqual(s.testBytes, [0, 0, 9, 0])
    }

    func testDescriptionNeverRevealsBytes() throws {
        // Printable bytes, so any leak as text, hex or decimal would show.
        let bytes: [UInt8] = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef".utf8)
        let s = bytes.withUnsafeBytes { SecretBytes(copying: $0) }
        let hexText = bytes.map { String($0, radix: 16) }.joined()
        for text in [s.description, "\(s)", String(describing: s), String(reflecting: s), "\([s])"] {
            XCTAssertTrue(text.contains("redacted"), text)
            XCTAssertFalse(text.contains("ABCD"), text)
            XCTAssertFalse(text.lowercased().contains("41424344"), text)
            XCTAssertFalse(text.contains("65, 66"), text)
            XCTAssertFalse(text.contains(hexText), text)
        }
        let random = try SecretBytes.random(count: 32)
        let randomHex = random.testBytes.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
        XCTAssertTrue(random.description.contains("redacted"))
        XCTAssertFalse(random.description.contains(randomHex))
        XCTAssertFalse(random.description.contains(String(randomHex.prefix(8))))
    }

    func testSecureZero() {
        var bytes = [UInt8](repeating: 0xFF, count: 100)
        bytes.withUnsafeMutableBytes { secureZero(UnsafeMutableRawBufferPointer(rebasing: $0[10..<20])) }
        XCTAssertEqual(Array(bytes[0..<10]), [UInt8](repeating: 0xFF, count: 10))
        XCTAssertEqual(Array(bytes[10..<20]), [UInt8](repeating: 0, count: 10))
        XCTAssertEqual(Array(bytes[20...]), [UInt8](repeating: 0xFF, count: 80))
        // An empty buffer is a no-op, not a crash.
        secureZero(UnsafeMutableRawBufferPointer(start: nil, count: 0))
    }
}

/// Key material is kept out of core dumps: every secret's pages are MADV_DONTDUMP (what
/// /proc/self/smaps shows as the "dd" flag), and a process can make itself non-dumpable.
final class SecretMemoryTests: XCTestCase {
    /// The VmFlags of the mapping holding `address`, from /proc/self/smaps.
    func flags(of address: UnsafeRawPointer) throws -> [String] {
        let a = UInt(bitPattern: address)
        var inside = false
        // procfs reports size 0: read to the end rather than by the size.
        let smaps = try XCTUnwrap(FileHandle(forReadingAtPath: "/proc/self/smaps")).readToEnd() ?? Data()
        XCTAssertGreaterThan(smaps.count, 0)
        for line in String(decoding: smaps, as: UTF8.self).split(separator: "\n") {
            let head = line.split(separator: " ").first ?? ""
            let range = head.split(separator: "-")
            if range.count == 2, let lo = UInt(range[0], radix: 16), let hi = UInt(range[1], radix: 16) {
                inside = lo <= a && a < hi
            } else if inside && line.hasPrefix("VmFlags:") {
                return line.split(separator: " ").dropFirst().map(String.init)
            }
        }
        return []
    }

    func testSecretsLiveOnPagesExcludedFromCoreDumps() throws {
        for count in [32, 64, 65, 5000] {
            let secret = try SecretBytes.random(count: count)
            let f = try secret.withUnsafeBytes { try flags(of: $0.baseAddress!) }
            XCTAssertTrue(f.contains("dd"), "a \(count)-byte secret is on a page a core dump would copy: \(f)")
        }
        // Slots are reused, and wiped before reuse.
        let many = try (0..<3000).map { _ in try SecretBytes.random(count: 32) }
        XCTAssertEqual(Set(many.map(\.testBytes)).count, 3000)
    }

    /// A secret of more than a slot and up to a page (the embedded KMS's key file, read per
    /// unwrap) gets a page that is kept and reused, not mapped and unmapped each time; it comes
    /// back zeroed and still excluded from core dumps.
    func testPageSizedSecretsReuseTheirPageWiped() throws {
        let size = SecretMemory.pageSize - 100
        var first: SecretBytes? = try SecretBytes.random(count: size)
        let address = first!.withUnsafeBytes { UInt(bitPattern: $0.baseAddress) }
        first = nil
        XCTAssertTrue(try flags(of: UnsafeRawPointer(bitPattern: address)!).contains("dd"), "the released page stays mapped, for reuse")
        let again = SecretBytes(zeroedCount: 200)
        again.withUnsafeBytes { bytes in
            XCTAssertEqual(UInt(bitPattern: bytes.baseAddress), address, "the released page is reused")
            XCTAssertTrue(bytes.allSatisfy { $0 == 0 })
        }
        XCTAssertTrue(try again.withUnsafeBytes { try flags(of: $0.baseAddress!) }.contains("dd"))
    }

    func testForbidCoreDumpsMakesTheProcessNonDumpable() {
        XCTAssertEqual(SecretMemory.forbidCoreDumps(), 0)
        XCTAssertFalse(SecretMemory.processIsDumpable)
    }
}
