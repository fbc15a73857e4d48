import XCTest
@testable import CMKAudit
import CMKCrypto

/// The bytes of a record are what its MAC covers and what every earlier verifier reads: the
/// writer may get faster, never different (docs/audit-format.md, format 2).
final class AuditRecordBytesTests: XCTestCase {
    /// Every field, with each escape the format defines, a negative number, the largest seq and
    /// absent values, against the bytes written out by hand from docs/audit-format.md.
    func testBodyBytesAreExactlyTheFormat() {
        let event = AuditEvent("open", result: "denied", errno: 13, error: "q\"b\\s\nt\tr\r\u{01}\u{7F}é",
                               fileID: "0011", path: "/a b/ü", keyID: "k", keyVersion: -2, cache: "miss",
                               uid: 0, gid: -1, pid: 4_294_967_296, process: "cat", detail: nil,
                               kmsRequest: "rq", kmsServerRequest: "srv", loginUID: 1000, user: "root", loginUser: "alice")
        let writer = AuditWriterFields(session: "ab12", mountpoint: "/mnt/x", version: "9.9")
        let body = AuditRecord.body(seq: UInt64.max, time: "2026-12-06T12:00:00.000001Z", volumeID: "vol",
                                    host: "h\"", prev: AuditRecord.genesis, event, writer: writer)
        let expected = #"{"v":2,"seq":18446744073709551615,"time":"2026-12-06T12:00:00.000001Z","event":"open","#
            + #""result":"denied","errno":13,"error":"q\"b\\s\nt\tr\r\u0001\u007fé","volume":"vol","file":"0011","#
            + #""path":"/a b/ü","key":"k","key_version":-2,"cache":"miss","uid":0,"gid":-1,"pid":4294967296,"#
            + #""process":"cat","host":"h\"","detail":null,"kms_request":"rq","kms_server_request":"srv","#
            + #""id":"ab12-18446744073709551615","errno_name":"EACCES","login_uid":1000,"user":"root","login_user":"alice","#
            + #""mountpoint":"/mnt/x","cmkfs_version":"9.9","prev":"# + "\"" + AuditRecord.genesis + "\""
        XCTAssertEqual(String(decoding: body, as: UTF8.self), expected)
    }

    /// A bare event: every optional field `null`, none of the conditional ones, seq 0 as "0".
    func testBodyOfABareEvent() {
        let body = AuditRecord.body(seq: 0, time: "t", volumeID: "", host: "", prev: "p", AuditEvent(""))
        XCTAssertEqual(String(decoding: body, as: UTF8.self),
                       #"{"v":2,"seq":0,"time":"t","event":"","result":"ok","errno":null,"error":null,"volume":"","#
                       + #""file":null,"path":null,"key":null,"key_version":null,"cache":null,"uid":null,"gid":null,"#
                       + #""pid":null,"process":null,"host":"","detail":null,"prev":"p"}"#.dropLast())
    }

    func testTimeIsUTCWithMicroseconds() {
        XCTAssertEqual(AuditRecord.time(seconds: 0, microseconds: 0), "1970-01-01T00:00:00.000000Z")
        XCTAssertEqual(AuditRecord.time(seconds: 1_796_601_861, microseconds: 123_456), "2026-12-07T00:04:21.123456Z")
        XCTAssertEqual(AuditRecord.time(seconds: 951_782_400, microseconds: 7), "2000-02-29T00:00:00.000007Z")
        XCTAssertEqual(AuditRecord.time(seconds: 253_402_300_799, microseconds: 999_999), "9999-12-31T23:59:59.999999Z")
        let now = AuditRecord.now()
        XCTAssertEqual(now.utf8.count, 27)
        XCTAssertNotNil(now.range(of: #"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$"#, options: .regularExpression), now)
    }

    /// The writer's kept HMAC context gives the line a fresh context gives, record after record
    /// (it starts over for each message), and the MAC is HMAC-SHA256 of the body.
    func testKeptMACContextGivesTheSameLines() throws {
        let key = [UInt8](repeating: 0x33, count: 32).withUnsafeBytes { SecretBytes(copying: $0) }
        let kept = try HMACSHA256.Keyed(key: key)
        var prev = AuditRecord.genesis
        for seq in 1...50 as ClosedRange<UInt64> {
            let body = AuditRecord.body(seq: seq, time: AuditRecord.now(), volumeID: "v", host: "h", prev: prev,
                                        AuditEvent("open", path: String(repeating: "x", count: Int(seq) * 7)))
            let fresh = try AuditRecord.line(body: body, key: key)
            let reused = try AuditRecord.line(body: body, mac: kept)
            XCTAssertEqual(reused.line, fresh.line)
            XCTAssertEqual(reused.mac, fresh.mac)
            XCTAssertEqual(fresh.mac, hexString(try HMACSHA256.mac(key: key, body)))
            XCTAssertEqual(Array(fresh.line.suffix(1 + 64 + 3)), Array(("\"" + fresh.mac + "\"}\n").utf8))
            prev = fresh.mac
        }
    }
}
