import Foundation
import Glibc
import Synchronization
import XCTest
import CMKAudit
import CMKCrypto

/// `--audit-syslog`'s copy (AuditFanOut + AuditCopy) against a real datagram socket the test
/// binds, as journald or syslogd would: the fields arrive, the local log stays the authority,
/// and what cannot be sent is counted and itself recorded.
final class AuditCopyTests: XCTestCase {
    var dir = ""
    var key: SecretBytes!
    var listener: Int32 = -1

    override func setUpWithError() throws {
        dir = NSTemporaryDirectory() + "cmkfs-audit-copy-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        key = try SecretBytes.random(count: 32)
    }

    override func tearDown() {
        if listener >= 0 { close(listener) }
        ContractSink.remove(dir)
    }

    /// Binds a datagram socket at `path` (what journald and syslogd listen on).
    func bind(_ path: String) throws {
        listener = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: Array(path.utf8)) }
        let rc = withUnsafePointer(to: &address) { a in
            a.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.bind(listener, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard rc == 0 else { throw ReadFailure(message: "bind \(path): \(errno)") }
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(listener, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    /// The next datagram (waits at most 10 s).
    func receive() throws -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        let n = buffer.withUnsafeMutableBytes { recv(listener, $0.baseAddress, $0.count, 0) }
        guard n > 0 else { throw ReadFailure(message: "no datagram within 10 s (errno \(errno))") }
        return Array(buffer[0..<n])
    }

    /// journald's native format: NAME=value lines, or NAME, newline, 64-bit LE length, value.
    static func journalFields(_ d: [UInt8]) -> [String: String] {
        var out: [String: String] = [:]
        var i = 0
        while i < d.count {
            let lineEnd = d[i...].firstIndex(of: 0x0A) ?? d.count
            if let eq = d[i..<lineEnd].firstIndex(of: UInt8(ascii: "=")) {
                out[String(decoding: d[i..<eq], as: UTF8.self)] = String(decoding: d[(eq + 1)..<lineEnd], as: UTF8.self)
                i = lineEnd + 1
            } else {
                let name = String(decoding: d[i..<lineEnd], as: UTF8.self)
                var n: UInt64 = 0
                for k in 0..<8 { n |= UInt64(d[lineEnd + 1 + k]) << (8 * UInt64(k)) }
                let start = lineEnd + 9
                out[name] = String(decoding: d[start..<(start + Int(n))], as: UTF8.self)
                i = start + Int(n) + 1
            }
        }
        return out
    }

    func openLog() throws -> AuditLog {
        try AuditLog.open(directory: dir + "/audit", key: key, volumeID: "00112233445566778899aabbccddeeff", checkpoints: nil,
                          mountpoint: "/mnt/x")
    }

    func logged() throws -> [String] {
        try AuditSegments.list(dir + "/audit").flatMap { try String(contentsOfFile: $0.path, encoding: .utf8).split(separator: "\n").map(String.init) }
    }

    func testJournalGetsEachRecordWithItsFields() throws {
        let socketPath = dir + "/journal.sock"
        try bind(socketPath)
        let copy = AuditCopy.forHost(environment: ["CMKFS_AUDIT_JOURNAL_SOCKET": socketPath, "CMKFS_AUDIT_SYSLOG_SOCKET": "/nonexistent"])
        XCTAssertEqual(copy.transport, .journal)
        let sink = AuditFanOut(local: try openLog(), copies: [copy])
        try sink.append(AuditEvent("open", result: "denied", errno: EACCES, error: "key disabled\nby the owner",
                                   fileID: String(repeating: "ab", count: 16), path: "/secret/name", keyID: "mk-1", keyVersion: 2,
                                   cache: "miss", uid: 0, gid: 0, pid: 42, process: "cat", loginUID: 1000))
        let fields = Self.journalFields(try receive())
        let line = try XCTUnwrap(try logged().first)
        XCTAssertEqual(fields["CMKFS_RECORD"], line, "the record as logged")
        XCTAssertEqual(fields["SYSLOG_IDENTIFIER"], "cmkfs")
        XCTAssertEqual(fields["PRIORITY"], "4")
        XCTAssertEqual(fields["CMKFS_EVENT"], "open")
        XCTAssertEqual(fields["CMKFS_RESULT"], "denied")
        XCTAssertEqual(fields["CMKFS_ERRNO"], "13")
        XCTAssertEqual(fields["CMKFS_ERRNO_NAME"], "EACCES")
        XCTAssertEqual(fields["CMKFS_ERROR"], "key disabled\nby the owner", "a value with a newline in the binary form")
        XCTAssertEqual(fields["CMKFS_SEQ"], "1")
        XCTAssertEqual(fields["CMKFS_ID"], "\(sink.local.writer.session)-1")
        XCTAssertEqual(fields["CMKFS_KEY_VERSION"], "2")
        XCTAssertEqual(fields["CMKFS_LOGIN_UID"], "1000")
        XCTAssertEqual(fields["CMKFS_MOUNTPOINT"], "/mnt/x")
        XCTAssertNil(fields["CMKFS_KMS_REQUEST"], "absent fields are not sent")
        XCTAssertFalse(fields.values.contains { $0.contains("/secret/name") }, "paths stay sealed: \(fields)")
        XCTAssertTrue(fields["MESSAGE"]?.hasPrefix("cmkfs audit: open denied seq 1 by cat") ?? false, "\(fields)")
        try sink.close()
        XCTAssertEqual(copy.counts.sent, 1)
    }

    func testWithoutJournalSyslogGetsTheJSONLine() throws {
        let socketPath = dir + "/log.sock"
        try bind(socketPath)
        let copy = AuditCopy.forHost(environment: ["CMKFS_AUDIT_JOURNAL_SOCKET": dir + "/no-journal", "CMKFS_AUDIT_SYSLOG_SOCKET": socketPath])
        XCTAssertEqual(copy.transport, .syslog)
        let sink = AuditFanOut(local: try openLog(), copies: [copy])
        try sink.append(AuditEvent("revoke", keyID: "mk-1", keyVersion: 3, detail: "incident"))
        let text = String(decoding: try receive(), as: UTF8.self)
        let line = try XCTUnwrap(try logged().first)
        XCTAssertTrue(text.hasPrefix("<86>"), text)
        XCTAssertTrue(text.hasSuffix("cmkfs[\(getpid())]: " + line), text)
        try sink.close()
    }

    /// A receiver that is there but never reads (a stuck journald): its socket queue fills, and
    /// a copy that waited for it would stop every append. 2,000 appends, more than the queue and
    /// the copy's capacity hold, all return (on a thread, so a hang fails the wait, not the
    /// suite) and are all in the local log.
    func testAppendsDoNotWaitForAReceiverThatNeverReads() throws {
        try bind(dir + "/stuck.sock")
        let copy = AuditCopy(transport: .journal, socket: dir + "/stuck.sock", capacity: 8, reportInterval: 3600)
        let sink = AuditFanOut(local: try openLog(), copies: [copy])
        let failure = Mutex<String?>(nil)
        let done = DispatchGroup()
        done.enter()
        Thread.detachNewThread {
            defer { done.leave() }
            do { for i in 0..<2_000 { try sink.append(AuditEvent("open", detail: "\(i)")) } } catch {
                failure.withLock { $0 = "\(error)" }
            }
        }
        XCTAssertEqual(done.wait(timeout: .now() + 120), .success, "appends waited for a receiver that never reads")
        XCTAssertNil(failure.withLock { $0 })
        try sink.close()
        XCTAssertEqual(try logged().filter { $0.contains(#""event":"open""#) }.count, 2_000, "the local log has every record")
        XCTAssertGreaterThan(copy.counts.droppedFull + copy.counts.droppedSend, 0, "the receiver's queue filled")
    }

    /// Nothing listening: every append still succeeds (the local log decides), and the drops
    /// are recorded in the local log, which verifies. (That appends never wait for the copy is
    /// `testAppendsDoNotWaitForAReceiverThatNeverReads`, without a clock.)
    func testUnsentRecordsAreCountedAndRecordedLocally() throws {
        let copy = AuditCopy(transport: .journal, socket: dir + "/nobody-listens", capacity: 8, reportInterval: 0.2)
        let sink = AuditFanOut(local: try openLog(), copies: [copy])
        for i in 0..<50 { try sink.append(AuditEvent("open", detail: "\(i)")) }
        // The periodic report, written by the copy's thread.
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline, !(try logged().contains { $0.contains(#""event":"audit-copy-dropped""#) }) { usleep(50_000) }
        try sink.close()
        let lines = try logged()
        XCTAssertEqual(lines.filter { $0.contains(#""event":"open""#) }.count, 50, "the local log has every record")
        let reports = lines.filter { $0.contains(#""event":"audit-copy-dropped""#) }
        XCTAssertFalse(reports.isEmpty, lines.joined(separator: "\n"))
        XCTAssertTrue(reports[0].contains(#""result":"error""#) && reports[0].contains("ENOENT"), reports[0])
        let counts = copy.counts
        XCTAssertEqual(counts.sent, 0)
        // mount-less log: every record (the reports too, but the last) was dropped one way or the other.
        XCTAssertGreaterThanOrEqual(counts.droppedFull + counts.droppedSend, 50)
        let report = try AuditVerifier.verify(segments: AuditSegments.list(dir + "/audit").map(\.path), key: key, checkpoint: nil)
        XCTAssertTrue(report.intact, "\(String(describing: report.problem))")
    }
}
