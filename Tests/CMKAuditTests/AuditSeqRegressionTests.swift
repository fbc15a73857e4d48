import Foundation
import XCTest
import CMKAudit
import CMKCrypto

/// Found by the `audit-record` fuzz target (docs/fuzzing.md) with its input
/// fuzz/corpus/audit-record/regression-seq-above-int-max.
final class AuditSeqRegressionTests: XCTestCase {
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
