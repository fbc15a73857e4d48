import Foundation
import Glibc
import XCTest
import CMKAudit
import CMKCrypto

/// The fields a SIEM joins on (docs/audit-format.md): added before `prev` only when set, so the
/// record format stays 2 and a log mixing records with and without them verifies.
final class AuditSIEMFieldsTests: XCTestCase {
    func testWriterAndCallerFieldsComeBeforePrevAndTheLogStillVerifies() throws {
        let dir = NSTemporaryDirectory() + "cmkfs-audit-siem-\(UUID().uuidString)"
        defer { ContractSink.remove(dir) }
        let key = try SecretBytes.random(count: 32)
        let log = try AuditLog.open(directory: dir, key: key, volumeID: "00112233445566778899aabbccddeeff", checkpoints: nil,
                                    mountpoint: "/mnt/secure")
        try log.append(AuditEvent("open", result: "denied", errno: EACCES, uid: 0, loginUID: 1000, user: "root", loginUser: "alice"))
        try log.append(AuditEvent("open", errno: 99_999))
        try log.close()
        let segments = AuditSegments.list(dir).map(\.path)
        let report = try AuditVerifier.verify(segments: segments, key: key, checkpoint: nil)
        XCTAssertTrue(report.intact, "\(String(describing: report.problem))")
        let lines = try String(contentsOfFile: segments[0], encoding: .utf8).split(separator: "\n").map(String.init)
        XCTAssertEqual(lines.count, 2)
        let session = log.writer.session
        XCTAssertTrue(session.count == 32 && session.allSatisfy(\.isHexDigit), session)
        XCTAssertTrue(lines[0].contains(#","detail":null,"id":"\#(session)-1","errno_name":"EACCES","login_uid":1000,"user":"root","#
                                        + #""login_user":"alice","mountpoint":"/mnt/secure","cmkfs_version":"\#(cmkfsVersion)","prev":"#),
                      lines[0])
        // An errno Linux has no name for: E and the number (Errno.symbol).
        XCTAssertTrue(lines[1].contains(#""errno":99999,"#) && lines[1].contains(#""errno_name":"E99999""#), lines[1])
        XCTAssertTrue(lines[1].contains(#","id":"\#(session)-2","errno_name":"E99999","mountpoint":"/mnt/secure","cmkfs_version":"#), lines[1])
    }

    /// A writer that is not a mount names no mountpoint, and each writer draws its own session.
    func testEachWriterHasItsOwnSession() throws {
        let dir = NSTemporaryDirectory() + "cmkfs-audit-siem-\(UUID().uuidString)"
        defer { ContractSink.remove(dir) }
        let key = try SecretBytes.random(count: 32)
        let first = try AuditLog.open(directory: dir, key: key, volumeID: "00", checkpoints: nil)
        try first.append(AuditEvent("init"))
        try first.close()
        let second = try AuditLog.open(directory: dir, key: key, volumeID: "00", checkpoints: nil)
        try second.append(AuditEvent("mount"))
        try second.close()
        XCTAssertNotEqual(first.writer.session, second.writer.session)
        let text = try AuditSegments.list(dir).map { try String(contentsOfFile: $0.path, encoding: .utf8) }.joined()
        XCTAssertFalse(text.contains("mountpoint"), text)
        XCTAssertTrue(text.contains(#""id":"\#(second.writer.session)-2""#), text)
    }
}
