import Foundation
import XCTest
import CMKAudit
import CMKCrypto

/// Seqs the audit code trapped on, found by the fuzz targets (docs/fuzzing.md); each test names
/// its input in fuzz/corpus/.
final class AuditSeqRegressionTests: XCTestCase {
    /// fuzz/corpus/audit-segment/regression-first-record-seq-0: a log whose first record has
    /// seq 0 (with a valid MAC, as only a holder of the audit key could make it) trapped verify
    /// computing "records 1…seq − 1 are missing" in UInt64. Now it is reported as missing-head.
    func testVerifyALogThatStartsAtSeqZero() throws {
        let dir = NSTemporaryDirectory() + "cmkfs-audit-seq0-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let key = [UInt8](repeating: 0x5A, count: 32).withUnsafeBytes { SecretBytes(copying: $0) }
        let body = AuditRecord.body(seq: 0, time: AuditRecord.now(), volumeID: "00", host: "h", prev: AuditRecord.genesis, AuditEvent("open"))
        let segment = dir + "/audit-000000000000.log"
        try Data(try AuditRecord.line(body: body, key: key).line).write(to: URL(fileURLWithPath: segment))

        let report = try AuditVerifier.verify(segments: [segment], key: key, checkpoint: nil)
        XCTAssertEqual(report.problem?.kind, .missingHead)
        XCTAssertEqual(report.problem?.seq, 0)
        let archived = try AuditVerifier.verify(segments: [segment], key: key, checkpoint: nil, allowMissingHead: true)
        XCTAssertTrue(archived.intact, "\(String(describing: archived.problem))")
    }

    /// `chainFields` reads a seq of up to 19 digits, so a segment whose last record says seq
    /// 9300000000000000000 (> Int.max) is resumed from, and the next append trapped converting
    /// seq + 1 to Int in `AuditRecord.body`: one edited line in audit/ crashed the mount at its
    /// first open, instead of being reported by `audit verify`.
    func testAppendAfterARecordWhoseSeqIsAboveIntMax() throws {
        let dir = NSTemporaryDirectory() + "cmkfs-audit-seq-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let key = [UInt8](repeating: 0x5A, count: 32).withUnsafeBytes { SecretBytes(copying: $0) }
        // A record as a writer makes it, its seq then edited (resume trusts the tail it continues
        // from; verify is what reports the edit).
        let seq = "9300000000000000000"
        XCTAssertGreaterThan(UInt64(seq)!, UInt64(Int.max))
        let body = AuditRecord.body(seq: 5, time: AuditRecord.now(), volumeID: "00", host: "h", prev: AuditRecord.genesis, AuditEvent("open"))
        let line = try AuditRecord.line(body: body, key: key).line
        let edited = String(decoding: line, as: UTF8.self).replacingOccurrences(of: #""seq":5,"#, with: #""seq":\#(seq),"#)
        try Data(edited.utf8).write(to: URL(fileURLWithPath: dir + "/audit-000000000001.log"))

        let log = try AuditLog.open(directory: dir, key: key, volumeID: "00", checkpoints: nil, lockWait: 0)
        XCTAssertEqual(log.count, UInt64(seq)!)
        try log.append(AuditEvent("open"))
        XCTAssertEqual(log.count, UInt64(seq)! + 1)
        try log.close()
        let written = try String(contentsOfFile: dir + "/audit-000000000001.log", encoding: .utf8)
        XCTAssertTrue(written.contains(#""seq":9300000000000000001,"#), written)
    }
}
