import Foundation
import Synchronization
import XCTest
import CMKCrypto
@testable import CMKAudit

/// A checkpoint store in memory.
final class MemoryCheckpoints: AuditCheckpointStore {
    let value = Mutex<[UInt8]?>(nil)
    func loadCheckpoint() throws -> [UInt8]? { value.withLock { $0 } }
    func saveCheckpoint(_ bytes: [UInt8]) throws { value.withLock { $0 = bytes } }
}

/// The record format, the chain and every kind of tampering the verifier must name.
final class AuditChainTests: XCTestCase {
    var dir = ""
    var key: SecretBytes!
    let checkpoints = MemoryCheckpoints()

    override func setUpWithError() throws {
        dir = NSTemporaryDirectory() + "cmkfs-audit-\(UUID().uuidString.prefix(8))"
        key = try SecretBytes.random(count: 32)
        checkpoints.value.withLock { $0 = nil }
    }

    override func tearDown() {
        // Segments may be append-only (chattr +a as root): clear the flag before removing them.
        _ = try? Process.run(URL(fileURLWithPath: "/usr/bin/chattr"), arguments: ["-R", "-a", dir]).waitUntilExit()
        try? FileManager.default.removeItem(atPath: dir)
    }

    /// Writes `n` open records (durable at the end) and returns the segment paths.
    @discardableResult
    func write(_ n: Int, segmentLimit: Int = 64 << 20) throws -> [String] {
        let log = try AuditLog.open(directory: dir, key: key, volumeID: "00112233445566778899aabbccddeeff",
                                    checkpoints: checkpoints, segmentLimit: segmentLimit)
        for i in 1...n {
            try log.append(AuditEvent("open", fileID: "ab" + String(repeating: "0", count: 30), path: "/dir/f\(i) \"q\"\n",
                                      keyID: "mk-1", keyVersion: 1, cache: i % 2 == 0 ? "hit" : "miss",
                                      uid: 1000, gid: 1000, pid: 4242, process: "cat"))
        }
        try log.close()
        return AuditSegments.list(dir).map(\.path)
    }

    func verify(allowMissingHead: Bool = false, segments: [String]? = nil) throws -> AuditReport {
        try AuditVerifier.verify(segments: segments ?? AuditSegments.list(dir).map(\.path), key: key,
                                 checkpoint: checkpoints.value.withLock { $0 }, allowMissingHead: allowMissingHead)
    }

    func lines(_ path: String) throws -> [String] {
        try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
    }

    /// Rewrites a segment (clearing chattr +a first, as a root attacker would).
    func rewrite(_ path: String, _ lines: [String]) throws {
        _ = try? Process.run(URL(fileURLWithPath: "/usr/bin/chattr"), arguments: ["-a", path]).waitUntilExit()
        try lines.joined(separator: "\n").write(toFile: path, atomically: false, encoding: .utf8)
    }

    func testIntactLogVerifiesAndRecordIsValidJSONWithFieldsInOrder() throws {
        let segments = try write(5)
        let report = try verify()
        XCTAssertTrue(report.intact, "\(String(describing: report.problem))")
        XCTAssertEqual(report.records, 5)
        XCTAssertEqual(report.checkpoint?.count, 5)
        let first = try lines(segments[0])[0]
        XCTAssertTrue(first.hasPrefix(#"{"v":2,"seq":1,"time":""#), first)
        let object = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(first.utf8)) as? [String: Any])
        // Format 2: the path is sealed under the audit key's path key, never in clear.
        XCTAssertFalse(first.contains("/dir/f1"), first)
        XCTAssertEqual(try AuditPathSeal(auditKey: key).open(try XCTUnwrap(object["path"] as? String)), "/dir/f1 \"q\"\n")
        XCTAssertEqual(object["prev"] as? String, AuditRecord.genesis)
        XCTAssertEqual(object["process"] as? String, "cat")
        XCTAssertEqual((object["mac"] as? String)?.count, 64)
        let time = try XCTUnwrap(object["time"] as? String)
        XCTAssertTrue(time.hasSuffix("Z") && time.count == 27, "UTC with microseconds: \(time)")
    }

    func testTheMACIsHMACSHA256OfTheBodyUnderTheKey() throws {
        let segments = try write(1)
        let line = try lines(segments[0])[0]
        let split = try XCTUnwrap(AuditRecord.split(Array(line.utf8)[...]))
        let expected = try HMACSHA256.mac(key: key, Array(split.body))
        XCTAssertEqual(hexString(expected), split.mac)
        // RFC 4231 test case 2 pins the HMAC itself.
        let jefe = Array("Jefe".utf8).withUnsafeBytes { SecretBytes(copying: $0) }
        XCTAssertEqual(hexString(try HMACSHA256.mac(key: jefe, Array("what do ya want ".utf8), Array("for nothing?".utf8))),
                       "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
    }

    func testEditedFieldIsNamed() throws {
        let path = try write(5)[0]
        var l = try lines(path)
        l[2] = l[2].replacingOccurrences(of: #""uid":1000"#, with: #""uid":0"#)
        try rewrite(path, l)
        let p = try XCTUnwrap(try verify().problem)
        XCTAssertEqual(p.kind, .edited)
        XCTAssertEqual(p.seq, 3)
        XCTAssertEqual(p.line, 3)
    }

    func testDeletedRecordIsNamed() throws {
        let path = try write(5)[0]
        var l = try lines(path)
        l.remove(at: 1)
        try rewrite(path, l)
        let p = try XCTUnwrap(try verify().problem)
        XCTAssertEqual(p.kind, .deleted)
        XCTAssertEqual(p.seq, 3)
        XCTAssertTrue(p.message.contains("record seq 2 is missing"), p.message)
    }

    func testSwappedRecordsAreNamed() throws {
        let path = try write(5)[0]
        var l = try lines(path)
        l.swapAt(1, 2)
        try rewrite(path, l)
        let p = try XCTUnwrap(try verify().problem)
        XCTAssertEqual(p.kind, .reordered)
        XCTAssertEqual(p.seq, 3)
    }

    func testInsertedRecordIsNamed() throws {
        let path = try write(5)[0]
        var l = try lines(path)
        let forged = l[1].replacingOccurrences(of: #""seq":2"#, with: #""seq":3"#).replacingOccurrences(of: "/dir/f2", with: "/dir/fake")
        l.insert(forged, at: 2)
        try rewrite(path, l)
        let p = try XCTUnwrap(try verify().problem)
        XCTAssertEqual(p.kind, .inserted)
        XCTAssertEqual(p.line, 3)
    }

    func testDuplicatedRecordIsNamed() throws {
        let path = try write(5)[0]
        var l = try lines(path)
        l.insert(l[1], at: 3)
        try rewrite(path, l)
        let p = try XCTUnwrap(try verify().problem)
        XCTAssertEqual(p.kind, .duplicate)
    }

    func testCutTailIsNamedThroughTheCheckpoint() throws {
        let path = try write(5)[0]
        var l = try lines(path)
        l.removeLast(3)   // two records and the final empty string
        try rewrite(path, l + [""])
        let p = try XCTUnwrap(try verify().problem)
        XCTAssertEqual(p.kind, .truncated)
        XCTAssertTrue(p.message.contains("ends at seq 3") && p.message.contains("records 4…5"), p.message)
    }

    func testReplacementByAnOlderCopyIsNamed() throws {
        let path = try write(3)[0]
        let old = try Data(contentsOf: URL(fileURLWithPath: path))
        try write(2)   // the chain continues to 5, checkpointed
        _ = try? Process.run(URL(fileURLWithPath: "/usr/bin/chattr"), arguments: ["-a", path]).waitUntilExit()
        try old.write(to: URL(fileURLWithPath: path))
        let p = try XCTUnwrap(try verify().problem)
        XCTAssertEqual(p.kind, .truncated)
        XCTAssertTrue(p.message.contains("older copy"), p.message)
    }

    func testChainRecomputedWithoutTheKeyIsNamed() throws {
        let path = try write(4)[0]
        // The attacker edits record 2 and recomputes every MAC with a key of their own.
        let forger = try SecretBytes.random(count: 32)
        var prev = AuditRecord.genesis
        var out: [String] = []
        for var line in try lines(path) where !line.isEmpty {
            if line.contains(#""seq":2,"#) { line = line.replacingOccurrences(of: #""uid":1000"#, with: #""uid":7"#) }
            let split = try XCTUnwrap(AuditRecord.split(Array(line.utf8)[...]))
            var body = String(decoding: split.body, as: UTF8.self)
            body = String(body.dropLast(66)) + "\"" + prev + "\""
            let forged = try AuditRecord.line(body: Array(body.utf8), key: forger)
            out.append(String(decoding: forged.line.dropLast(), as: UTF8.self))
            prev = forged.mac
        }
        try rewrite(path, out + [""])
        let p = try XCTUnwrap(try verify().problem)
        XCTAssertEqual(p.kind, .rewritten)
        XCTAssertEqual(p.seq, 1)
    }

    func testAlteredCheckpointIsNamed() throws {
        try write(3)
        checkpoints.value.withLock { cp in
            cp = Array(String(decoding: cp!, as: UTF8.self).replacingOccurrences(of: "seq=3", with: "seq=2").utf8)
        }
        XCTAssertEqual(try verify().problem?.kind, .checkpoint)
    }

    func testTornTailIsANoteNotForgeryAndTheWriterContinuesInANewSegment() throws {
        let path = try write(3)[0]
        _ = try? Process.run(URL(fileURLWithPath: "/usr/bin/chattr"), arguments: ["-a", path]).waitUntilExit()
        let handle = try XCTUnwrap(FileHandle(forWritingAtPath: path))
        handle.seekToEndOfFile()
        handle.write(Data(#"{"v":1,"seq":4,"time":"2026"#.utf8))
        try handle.close()
        var report = try verify()
        XCTAssertTrue(report.intact, "\(String(describing: report.problem))")
        XCTAssertEqual(report.records, 3)
        XCTAssertTrue(report.notes.first?.contains("torn tail") == true, "\(report.notes)")
        let segments = try write(2)
        XCTAssertEqual(segments.count, 2, "the next writer starts a new segment after a torn one")
        report = try verify()
        XCTAssertTrue(report.intact, "\(String(describing: report.problem))")
        XCTAssertEqual(report.records, 5)
    }

    func testSegmentsRollAndTheChainContinuesAcrossThem() throws {
        let segments = try write(40, segmentLimit: 2048)
        XCTAssertGreaterThan(segments.count, 5)
        XCTAssertTrue(try verify().intact)
        // A deleted middle segment is a deletion; a shipped tail set verifies with a note.
        let tail = Array(segments.suffix(2))
        let partial = try verify(allowMissingHead: true, segments: tail)
        XCTAssertTrue(partial.intact)
        XCTAssertFalse(partial.notes.isEmpty)
        XCTAssertEqual(try verify(segments: tail).problem?.kind, .missingHead)
        var gap = segments
        gap.remove(at: 2)
        XCTAssertEqual(try verify(segments: gap).problem?.kind, .deleted)
    }

    func testAnotherWriterIsRefusedWhileOneHoldsTheLog() throws {
        let log = try AuditLog.open(directory: dir, key: key, volumeID: "00", checkpoints: nil)
        XCTAssertThrowsError(try AuditLog.open(directory: dir, key: key, volumeID: "00", checkpoints: nil, lockWait: 0.1)) {
            XCTAssertEqual(($0 as? AuditError)?.kind, .busy)
        }
        try log.close()
    }
}
