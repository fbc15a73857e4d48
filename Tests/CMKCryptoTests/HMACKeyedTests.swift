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
}
