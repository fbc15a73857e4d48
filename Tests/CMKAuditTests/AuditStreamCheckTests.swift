import Foundation
import XCTest
import CMKAudit
import CMKCrypto

/// `AuditTail` with its chain check (what `audit show`/`export` stream through): the records
/// before a bad one are handed on, the bad one and those after are not, and `read` names its
/// segment and line.
final class AuditStreamCheckTests: XCTestCase {
    var dir = ""
    var key: SecretBytes!

    override func setUpWithError() throws {
        dir = NSTemporaryDirectory() + "cmkfs-audit-stream-\(UUID().uuidString.prefix(8))"
        key = try SecretBytes.random(count: 32)
    }

    override func tearDown() { ContractSink.remove(dir) }

    /// Writes `n` open records and returns the segment paths.
    @discardableResult
    func write(_ n: Int, segmentLimit: Int = 64 << 20) throws -> [String] {
        let log = try AuditLog.open(directory: dir, key: key, volumeID: "00112233445566778899aabbccddeeff",
                                    checkpoints: nil, segmentLimit: segmentLimit)
        for i in 1...n {
            try log.append(AuditEvent("open", fileID: "ab" + String(repeating: "0", count: 30), path: "/dir/f\(i)",
                                      keyID: "mk-1", keyVersion: 1, cache: "hit", uid: 1000, gid: 1000, pid: 4242, process: "cat"))
        }
        try log.close()
        return AuditSegments.list(dir).map(\.path)
    }

    func lines(_ path: String) throws -> [String] {
        try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
    }

    /// Rewrites a segment (clearing chattr +a first, as a root attacker would).
    func rewrite(_ path: String, _ lines: [String]) throws {
        _ = try? Process.run(URL(fileURLWithPath: "/usr/bin/chattr"), arguments: ["-a", path]).waitUntilExit()
        try lines.joined(separator: "\n").write(toFile: path, atomically: false, encoding: .utf8)
    }

    /// Reads the log through a checking tail; the seqs handed on and the error, if any.
    func stream(chunk: Int = 1 << 20) throws -> (seqs: [UInt64], error: AuditError?, check: AuditStreamCheck?) {
        var tail = AuditTail(directory: dir, chunk: chunk)
        tail.check = try AuditStreamCheck(key: key)
        var seqs: [UInt64] = []
        do {
            try tail.read { line in
                let text = String(decoding: line, as: UTF8.self)
                let seq = text.split(separator: ",")[1].split(separator: ":")[1]
                seqs.append(UInt64(seq)!)
            }
        } catch { return (seqs, error, tail.check) }
        return (seqs, nil, tail.check)
    }

    func testAnIntactLogStreamsWhole() throws {
        try write(30, segmentLimit: 4096)
        XCTAssertGreaterThan(AuditSegments.list(dir).count, 1, "several segments")
        let (seqs, error, check) = try stream(chunk: 512)
        XCTAssertNil(error)
        XCTAssertEqual(seqs, Array(1...30))
        XCTAssertEqual(check?.records, 30)
        XCTAssertNil(check?.startedAt)
    }

    func testAnEditedRecordStopsTheStreamThere() throws {
        let segment = try write(6)[0]
        var l = try lines(segment)
        l[3] = l[3].replacingOccurrences(of: #""uid":1000"#, with: #""uid":0"#)
        try rewrite(segment, l)
        let (seqs, error, _) = try stream()
        XCTAssertEqual(seqs, [1, 2, 3])
        XCTAssertEqual(error?.kind, .malformed)
        XCTAssertTrue(error?.message.contains("audit-000000000001.log line 4: record seq 4 does not match its MAC") ?? false, "\(String(describing: error))")
    }

    func testADeletedRecordStopsTheStreamAtTheNext() throws {
        let segment = try write(6)[0]
        var l = try lines(segment)
        l.remove(at: 2)
        try rewrite(segment, l)
        let (seqs, error, _) = try stream()
        XCTAssertEqual(seqs, [1, 2])
        XCTAssertTrue(error?.message.contains("line 3: record seq 4 follows seq 2") ?? false, "\(String(describing: error))")
    }

    func testAHandMadeLineStopsTheStream() throws {
        let segment = try write(3)[0]
        var l = try lines(segment)
        l.insert(#"{"v":2,"seq":2,"event":"open"}"#, at: 1)
        try rewrite(segment, l)
        let (seqs, error, _) = try stream()
        XCTAssertEqual(seqs, [1])
        XCTAssertTrue(error?.message.contains("line 2: a line that is not a record") ?? false, "\(String(describing: error))")
    }

    /// Archived first segments: checked from the first record there is, noted.
    func testALogStartingMidChainIsCheckedFromItsFirstRecord() throws {
        let segments = try write(30, segmentLimit: 4096)
        _ = try? Process.run(URL(fileURLWithPath: "/usr/bin/chattr"), arguments: ["-a", segments[0]]).waitUntilExit()
        try FileManager.default.removeItem(atPath: segments[0])
        let (seqs, error, check) = try stream()
        XCTAssertNil(error)
        XCTAssertEqual(seqs.last, 30)
        XCTAssertEqual(check?.startedAt, seqs.first)
        XCTAssertGreaterThan(seqs.first ?? 0, 1)
    }
}
