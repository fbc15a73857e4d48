import XCTest
import Foundation
@testable import CMKAudit
import CMKCrypto

/// The writer builds a record's line from parts prepared before its lock (`AuditRecord.prepare`,
/// `line(seq:time:prev:…)`) and encodes sealed paths with its own base64: both must give the
/// bytes the reference writer (`AuditRecord.body` + `line(body:…)`, pinned by
/// `AuditRecordBytesTests`) and Foundation give, so every verifier reads them as before.
final class AuditRecordFastPathTests: XCTestCase {
    func testBase64IsFoundationsForEveryLengthTo300() {
        var generator = SystemRandomNumberGenerator()
        for count in 0...300 {
            for _ in 0..<4 {
                let bytes = (0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) }
                let ours = bytes.withUnsafeBytes { AuditBase64.encode($0) }
                XCTAssertEqual(ours, Data(bytes).base64EncodedString(), "\(count) bytes: \(bytes)")
            }
        }
        // Every character of the alphabet, '+' and '/' included.
        let all = [UInt8](repeating: 0xFF, count: 3) + (0..<64).flatMap { i -> [UInt8] in
            let v = UInt32(i) << 18 | UInt32(63 - i) << 12 | UInt32(i) << 6 | UInt32(63 - i)
            return [UInt8(v >> 16), UInt8(v >> 8 & 0xFF), UInt8(v & 0xFF)]
        }
        XCTAssertEqual(all.withUnsafeBytes { AuditBase64.encode($0) }, Data(all).base64EncodedString())
    }

    /// Events with every optional field set and unset, with characters needing escapes in the
    /// path, the process, the user names and the writer's fields, each with and without a writer
    /// (and a mountpoint): the prepared line is byte for byte the reference line, MAC included,
    /// with the kept context and with a one-shot MAC.
    func testPreparedLineIsTheReferenceLineByteForByte() throws {
        let key = try SecretBytes.random(count: 32)
        let kept = try HMACSHA256.Keyed(key: key)
        let odd = "q\"b\\s\nt\tr\r\u{01}\u{1F}\u{7F}é😀/x"
        let full = AuditEvent("open", result: "denied", errno: 13, error: odd, fileID: "00ff", path: "/a " + odd,
                              keyID: "k" + odd, keyVersion: -2, cache: "miss", uid: 0, gid: -1, pid: 4_294_967_296,
                              process: "c\"at\n", detail: "d" + odd, kmsRequest: "rq" + odd, kmsServerRequest: "srv\\",
                              loginUID: 1000, user: "ro\"ot", loginUser: "al\u{7}ice")
        var events = [AuditEvent(""), AuditEvent("create", fileID: "ab", path: "/plain", cache: "new"), full]
        // Each optional field of the full event unset in turn.
        let unsetters: [(inout AuditEvent) -> Void] = [
            { $0.errno = nil }, { $0.error = nil }, { $0.fileID = nil }, { $0.path = nil }, { $0.keyID = nil },
            { $0.keyVersion = nil }, { $0.cache = nil }, { $0.uid = nil }, { $0.gid = nil }, { $0.pid = nil },
            { $0.process = nil }, { $0.detail = nil }, { $0.kmsRequest = nil }, { $0.kmsServerRequest = nil },
            { $0.loginUID = nil }, { $0.user = nil }, { $0.loginUser = nil },
        ]
        for unset in unsetters { var e = full; unset(&e); events.append(e) }
        let writers: [AuditWriterFields?] = [
            nil,
            AuditWriterFields(session: "0123456789abcdef0123456789abcdef", mountpoint: nil),
            AuditWriterFields(session: "s\"1", mountpoint: "/mnt/a \"b\"\n", version: "9.9\\"),
        ]
        let seqs: [UInt64] = [0, 1, 9, 10, 1_000_001, UInt64(Int.max) + 7, UInt64.max]
        let times: [(Int, Int)] = [(0, 0), (1_796_601_861, 123_456_789), (951_782_400, 7_000), (253_402_300_799, 999_999_999)]
        var compared = 0
        for (volume, host) in [("0123456789abcdef", "bench-host"), ("", ""), ("v\"ol", "h\\o\nst")] {
            for writer in writers {
                let constants = AuditRecordConstants(volumeID: volume, host: host, writer: writer)
                for (i, event) in events.enumerated() {
                    let seq = seqs[i % seqs.count]
                    let (seconds, nanoseconds) = times[i % times.count]
                    let prev = i == 0 ? AuditRecord.genesis : hexString(try SecureRandom.bytes(32))
                    let reference = AuditRecord.body(seq: seq, time: AuditRecord.time(seconds: seconds, microseconds: nanoseconds / 1000),
                                                     volumeID: volume, host: host, prev: prev, event, writer: writer)
                    let expected = try AuditRecord.line(body: reference, key: key)
                    let prepared = AuditRecord.prepare(event, path: event.path, constants)
                    let time = timespec(tv_sec: seconds, tv_nsec: nanoseconds)
                    for context in [kept, nil] {
                        let fast = try AuditRecord.line(seq: seq, time: time, prev: prev, prepared, mac: context, key: key)
                        XCTAssertEqual(String(decoding: fast.line, as: UTF8.self), String(decoding: expected.line, as: UTF8.self))
                        XCTAssertEqual(fast.line, expected.line)
                        XCTAssertEqual(fast.mac, expected.mac)
                        compared += 1
                    }
                }
            }
        }
        XCTAssertEqual(compared, 3 * writers.count * events.count * 2)
    }

    /// A sealed path is standard padded base64 that Foundation decodes, opens to the path, has
    /// the documented length, and carries a fresh nonce per record.
    func testSealedPathIsStandardBase64WithAFreshNonce() throws {
        let seal = try AuditPathSeal(auditKey: try SecretBytes.random(count: 32))
        for path in ["", "/", "/a/b c/ü😀\n\"", "/" + String(repeating: "dir/", count: 60) + "file.txt"] {
            let a = try seal.seal(path), b = try seal.seal(path)
            XCTAssertNotEqual(a, b)
            XCTAssertNotEqual(a.prefix(16), b.prefix(16))
            for text in [a, b] {
                let data = try XCTUnwrap(Data(base64Encoded: text))
                XCTAssertEqual(data.count, 12 + path.utf8.count + 16)
                XCTAssertEqual(data.base64EncodedString(), text)
                if !path.isEmpty { XCTAssertEqual(seal.open(text), path) }
            }
        }
    }
}
