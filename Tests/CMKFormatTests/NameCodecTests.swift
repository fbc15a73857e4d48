import XCTest
import CMKCrypto
@testable import CMKFormat

/// The name codec: AES-256-SIV names bound to their directory, long names, symlink targets,
/// base64url.
final class NameCodecTests: XCTestCase {
    func codec() throws -> NameCodec { try NameCodec(key: try SecretBytes.random(count: 64)) }
    let dirA = [UInt8](repeating: 1, count: 16), dirB = [UInt8](repeating: 2, count: 16)

    func testRoundTripIsDeterministicAndBoundToTheDirectory() throws {
        let c = try codec()
        for name in ["a", "payroll-2026-q3.xlsx", "Grüße, 日本語 ✓", String(repeating: "x", count: 16), String(repeating: "y", count: 112)] {
            let e = try c.encrypt(name, directoryID: dirA)
            XCTAssertNil(e.fullName, name)
            XCTAssertLessThanOrEqual(e.backingName.utf8.count, NameCodec.maxDirectLength)
            XCTAssertFalse(e.backingName.contains(".") || e.backingName.contains("/"))
            XCTAssertEqual(try c.encrypt(name, directoryID: dirA), e, "deterministic: lookups need no scan")
            XCTAssertNotEqual(try c.encrypt(name, directoryID: dirB).backingName, e.backingName, "the directory id is a tweak")
            XCTAssertEqual(try c.decrypt(e.backingName, directoryID: dirA), name)
            XCTAssertThrowsError(try c.decrypt(e.backingName, directoryID: dirB), "a name moved to another directory")
            if name.count > 4 { XCTAssertFalse(e.backingName.contains(name)) }
        }
    }

    func testPaddingHidesLengthsWithinSixteenBytes() throws {
        let c = try codec()
        let lengths = Set((1...16).map { try! c.encrypt(String(repeating: "a", count: $0), directoryID: dirA).backingName.count })
        XCTAssertEqual(lengths.count, 1)
        XCTAssertNotEqual(try c.encrypt(String(repeating: "a", count: 17), directoryID: dirA).backingName.count, lengths.first)
    }

    func testLongNamesUseAHashAndKeepTheFullEncoding() throws {
        let c = try codec()
        let name = String(repeating: "é", count: 127) + "z"   // 255 bytes
        XCTAssertEqual(name.utf8.count, 255)
        let e = try c.encrypt(name, directoryID: dirA)
        let full = try XCTUnwrap(e.fullName)
        XCTAssertTrue(NameCodec.isLong(e.backingName))
        XCTAssertEqual(e.backingName.utf8.count, 45)
        XCTAssertEqual(NameCodec.hash(ofLong: e.backingName), e.hash)
        XCTAssertEqual(try NameCodec.longHash(full), e.hash)
        XCTAssertEqual(try c.decrypt(full, directoryID: dirA), name)
        XCTAssertTrue(try c.encrypt(String(repeating: "q", count: 113), directoryID: dirA).fullName != nil, "113 bytes is long")
        XCTAssertThrowsError(try c.encrypt(String(repeating: "q", count: 256), directoryID: dirA)) {
            XCTAssertEqual($0 as? NameError, .tooLong)
        }
    }

    func testTamperedOrForeignNamesFail() throws {
        let c = try codec(), other = try codec()
        let e = try c.encrypt("secret.txt", directoryID: dirA).backingName
        var bytes = Array(e.utf8)
        bytes[5] = bytes[5] == UInt8(ascii: "A") ? UInt8(ascii: "B") : UInt8(ascii: "A")
        for bad in [String(decoding: bytes, as: UTF8.self), String(e.dropLast()), e + "AA", "not base64!", "", "L.abc"] {
            XCTAssertThrowsError(try c.decrypt(bad, directoryID: dirA), bad)
        }
        XCTAssertThrowsError(try other.decrypt(e, directoryID: dirA), "another key")
        for bad in ["", ".", "..", "a/b", "a\u{0}b"] { XCTAssertThrowsError(try c.encrypt(bad, directoryID: dirA), bad) }
    }

    func testSymlinkTargetsAreRandomized() throws {
        let c = try codec()
        for target in ["../x", "/etc/passwd", String(repeating: "t", count: 720), "日本/" + String(repeating: "t", count: 3000),
                       String(repeating: "u", count: 4095)] {
            let a = try c.encryptTarget(target), b = try c.encryptTarget(target)
            XCTAssertNotEqual(a, b)
            let encoding = a.fullName ?? a.backingName
            XCTAssertEqual(try c.decryptTarget(encoding), target)
            XCTAssertLessThanOrEqual(a.backingName.utf8.count, NameCodec.maxDirectTargetLength)
            XCTAssertEqual(a.fullName != nil, target.utf8.count > 720, "only long targets use the long form")
            if let hash = a.hash { XCTAssertEqual(NameCodec.hash(ofLong: a.backingName), hash) }
            XCTAssertThrowsError(try c.decryptTarget(String(encoding.dropFirst(4))))
        }
        XCTAssertThrowsError(try c.encryptTarget(String(repeating: "v", count: 4096))) { XCTAssertEqual($0 as? NameError, .tooLong) }
    }

    func testBase64URL() {
        for n in 0..<40 {
            let bytes = (0..<n).map { UInt8(($0 * 37 + 11) & 0xFF) }
            let e = Base64URL.encode(bytes)
            XCTAssertEqual(Base64URL.decode(e), bytes)
            XCTAssertFalse(e.contains("=") || e.contains("+") || e.contains("/"))
        }
        XCTAssertEqual(Base64URL.encode(Array("hi?>".utf8)), "aGk_Pg")
        XCTAssertNil(Base64URL.decode("aGk_Ph"), "non-zero spare bits")
        XCTAssertNil(Base64URL.decode("a"))
    }

    func testDirectoryIDFile() throws {
        let dir = "/tmp/cmkfs-dirid-\(UUID().uuidString)"
        XCTAssertEqual(mkdir(dir, 0o700), 0)
        defer { unlink(dir + "/" + NameCodec.directoryIDFile); rmdir(dir) }
        let fd = open(dir, O_RDONLY | O_DIRECTORY)
        defer { close(fd) }
        let id = try DirectoryID.create(directoryFD: fd)
        XCTAssertEqual(id.count, 16)
        XCTAssertEqual(try DirectoryID.read(directoryFD: fd), id)
        XCTAssertThrowsError(try DirectoryID.create(directoryFD: fd), "never overwritten")
    }
}
