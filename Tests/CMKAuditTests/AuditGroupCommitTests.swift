import Foundation
import Synchronization
import XCTest
import CMKCrypto
@testable import CMKAudit

/// A checkpoint store that takes as long as meta.db's durable commit does (a few ms), and
/// remembers the highest seq it holds.
final class SlowCheckpoints: AuditCheckpointStore {
    let key: SecretBytes
    let saved = Mutex<UInt64>(0)
    init(key: SecretBytes) { self.key = key }
    func loadCheckpoint() throws -> [UInt8]? { nil }
    func saveCheckpoint(_ bytes: [UInt8]) throws {
        usleep(2_000)
        let count = try AuditCheckpoint.decode(bytes, key: key).count
        saved.withLock { $0 = max($0, count) }
    }
}

/// Durable appends made at the same time share one fsync and one checkpoint (group commit), and
/// none returns before an fsync and a checkpoint that cover its record.
final class AuditGroupCommitTests: XCTestCase {
    var dir = ""

    override func setUpWithError() throws {
        dir = NSTemporaryDirectory() + "cmkfs-audit-gc-\(UUID().uuidString.prefix(8))"
    }

    override func tearDown() {
        _ = try? Process.run(URL(fileURLWithPath: "/usr/bin/chattr"), arguments: ["-R", "-a", dir]).waitUntilExit()
        try? FileManager.default.removeItem(atPath: dir)
    }

    func testConcurrentDurableAppendsShareFsyncsAndEachReturnsOnlyOnceCovered() throws {
        let key = try SecretBytes.random(count: 32)
        let checkpoints = SlowCheckpoints(key: key)
        let log = try AuditLog.open(directory: dir, key: key, volumeID: "00112233445566778899aabbccddeeff",
                                    checkpoints: checkpoints)
        let threads = 8, each = 40
        // For each record (by its detail): the checkpointed seq when its append returned.
        let coveredAtReturn = Mutex<[String: UInt64]>([:])
        let failures = Mutex<[String]>([])
        // Threads of their own (concurrentPerform would run only as many as there are CPUs).
        let done = DispatchGroup()
        for t in 0..<threads {
            done.enter()
            Thread.detachNewThread {
                defer { done.leave() }
                for i in 0..<each {
                    let tag = "t\(t)-\(i)"
                    do {
                        try log.append(AuditEvent("revoke", keyID: "mk-1", keyVersion: 1, detail: tag), durable: true)
                        let covered = checkpoints.saved.withLock { $0 }
                        coveredAtReturn.withLock { $0[tag] = covered }
                    } catch { failures.withLock { $0.append("\(tag): \(error)") } }
                }
            }
        }
        XCTAssertEqual(done.wait(timeout: .now() + 120), .success, "the appenders did not finish")
        XCTAssertEqual(failures.withLock { $0 }, [])
        let records = threads * each
        let fsyncs = log.fsyncCount
        try log.close()
        print("group commit: \(fsyncs) fsyncs for \(records) durable records from \(threads) threads")
        // One fsync per batch, not per record: with 8 appenders most batches hold several.
        XCTAssertLessThan(fsyncs, records / 2, "\(fsyncs) fsyncs for \(records) durable records")

        let report = try AuditVerifier.verify(segments: AuditSegments.list(dir).map(\.path), key: key, checkpoint: nil)
        XCTAssertTrue(report.intact, "\(String(describing: report.problem))")
        XCTAssertEqual(report.records, records)
        // Every record is there, and its append returned only after a checkpoint (written after
        // the fsync) reached its seq.
        var seen = 0
        for segment in AuditSegments.list(dir) {
            let text = try String(contentsOfFile: segment.path, encoding: .utf8)
            for line in text.split(separator: "\n") {
                let object = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
                let tag = try XCTUnwrap(object["detail"] as? String)
                let seq = try XCTUnwrap((object["seq"] as? NSNumber)?.uint64Value)
                let covered = try XCTUnwrap(coveredAtReturn.withLock { $0[tag] }, "\(tag) is in the log but its append did not return")
                XCTAssertGreaterThanOrEqual(covered, seq, "\(tag) (seq \(seq)) returned before a sync covered it")
                seen += 1
            }
        }
        XCTAssertEqual(seen, records)
    }
}
