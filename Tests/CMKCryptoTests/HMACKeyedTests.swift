import XCTest
import CMKCrypto

/// The reusable HMAC context gives RFC 4231's values and the one-shot `mac(key:)`'s, message
/// after message (each a fresh MAC, not a continuation of the one before).
final class HMACKeyedTests: XCTestCase {
    func testRFC4231Case2AndReuse() throws {
        // RFC 4231, test case 2: key "Jefe", data "what do ya want for nothing?".
        let key = Array("Jefe".utf8).withUnsafeBytes { SecretBytes(copying: $0) }
        let keyed = try HMACSHA256.Keyed(key: key)
        var out = [UInt8](repeating: 0, count: 32)
        for _ in 0..<3 {
            try Array("what do ya want for nothing?".utf8).withUnsafeBytes { m in try out.withUnsafeMutableBytes { try keyed.mac(m, into: $0) } }
            XCTAssertEqual(out.map { String(format: "%02x", $0) }.joined(),
                           "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        }
        let other = Array(repeating: UInt8(7), count: 700)
        try other.withUnsafeBytes { m in try out.withUnsafeMutableBytes { try keyed.mac(m, into: $0) } }
        XCTAssertEqual(out, try HMACSHA256.mac(key: key, other))
    }

    /// The one-shot MAC of several parts is the MAC of their concatenation (RFC 4231 cases 2 and
    /// 3, the message cut at every place, empty parts included), as the audit checkpoint, SigV4
    /// and the name bindings need.
    func testOneShotOfPartsIsTheMacOfTheirConcatenation() throws {
        let jefe = Array("Jefe".utf8).withUnsafeBytes { SecretBytes(copying: $0) }
        let message = Array("what do ya want for nothing?".utf8)
        for cut in 0...message.count {
            let mac = try HMACSHA256.mac(key: jefe, Array(message[..<cut]), [], Array(message[cut...]))
            XCTAssertEqual(hex(mac), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843", "cut at \(cut)")
        }
        // Case 3: a 20-byte key of 0xaa, 50 bytes of 0xdd.
        let aa = [UInt8](repeating: 0xaa, count: 20).withUnsafeBytes { SecretBytes(copying: $0) }
        XCTAssertEqual(hex(try HMACSHA256.mac(key: aa, [UInt8](repeating: 0xdd, count: 30), [UInt8](repeating: 0xdd, count: 20))),
                       "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe")
        XCTAssertEqual(hex(try HMACSHA256.mac(key: aa)), hex(try HMACSHA256.mac(key: aa, [])))
    }

    private func hex(_ bytes: [UInt8]) -> String { bytes.map { String(format: "%02x", $0) }.joined() }
}
