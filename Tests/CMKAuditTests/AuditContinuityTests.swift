import Foundation
import Synchronization
import XCTest
import CMKCrypto
@testable import CMKAudit

/// An anchor kept in memory, as a provider would keep it outside the volume.
final class MemoryAnchor: AuditAnchorStore {
    let value = Mutex<[UInt8]?>(nil)
    let saves = Mutex(0)
    var place: String { "the test's anchor" }
    func loadAnchor() throws -> [UInt8]? { value.withLock { $0 } }
    func saveAnchor(_ bytes: [UInt8], seq: UInt64) throws {
        value.withLock { $0 = bytes }
        saves.withLock { $0 += 1 }
    }
}

/// An anchor in memory whose next save first runs `during`: a durable record appended while the
/// provider call is under way (a `key revoke` meeting a slow KMS).
final class InterruptedAnchor: AuditAnchorStore {
    let base = MemoryAnchor()
    let during = Mutex<(@Sendable () throws -> Void)?>(nil)
    var place: String { base.place }
    func loadAnchor() throws -> [UInt8]? { try base.loadAnchor() }
    func saveAnchor(_ bytes: [UInt8], seq: UInt64) throws {
        if let action = during.withLock({ a in defer { a = nil }; return a }) { try action() }
        try base.saveAnchor(bytes, seq: seq)
    }
}

/// A writer that finds records missing never continues from what it found (issue 17, items 1–3):
/// it chains an `audit-gap` record from the last known head, and `verify` names it ever after;
/// the anchor outside the volume names a log rolled back together with its checkpoint; only
/// pending denials cmkfs wrote enter the chain.
final class AuditContinuityTests: XCTestCase {
    var dir = ""
    var key: SecretBytes!
    let checkpoints = MemoryCheckpoints()
    let anchor = MemoryAnchor()

    override func setUpWithError() throws {
        dir = NSTemporaryDirectory() + "cmkfs-continuity-\(UUID().uuidString.prefix(8))"
        key = try SecretBytes.random(count: 32)
    }

    override func tearDown() {
        _ = try? Process.run(URL(fileURLWithPath: "/usr/bin/chattr"), arguments: ["-R", "-a", dir]).waitUntilExit()
        try? FileManager.default.removeItem(atPath: dir)
    }

    /// One writer session: opens the log (as a mount does), appends `n` opens, closes.
    func session(_ n: Int, anchored: Bool = true) throws {
        let log = try AuditLog.open(directory: dir, key: key, volumeID: "00112233445566778899aabbccddeeff",
                                    checkpoints: checkpoints, anchor: anchored ? anchor : nil, anchorInterval: 3600)
        for i in 0..<n {
            try log.append(AuditEvent("open", fileID: String(repeating: "cd", count: 16), path: "/f\(i)", uid: 0, pid: 1, process: "cat"))
        }
        try log.close()
    }

    func verify(withAnchor: Bool = false) throws -> AuditReport {
        try AuditVerifier.verify(segments: AuditSegments.list(dir).map(\.path), key: key,
                                 checkpoint: checkpoints.value.withLock { $0 },
                                 anchor: withAnchor ? AuditAnchorCheck(bytes: anchor.value.withLock { $0 }, place: anchor.place) : nil)
    }

    func cutTo(_ keep: Int) throws {
        let path = try XCTUnwrap(AuditSegments.list(dir).last?.path)
        _ = try? Process.run(URL(fileURLWithPath: "/usr/bin/chattr"), arguments: ["-a", path]).waitUntilExit()
        let lines = try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").prefix(keep)
        try (lines.joined(separator: "\n") + "\n").write(toFile: path, atomically: false, encoding: .utf8)
    }

    /// Item 1: cut the newest records, then one more writer session: verify must not say intact.
    func testWriterAfterACutTailChainsAGapThatVerifyNamesEverAfter() throws {
        try session(5)
        XCTAssertTrue(try verify().intact)
        try cutTo(3)
        try session(2)
        var p = try XCTUnwrap(try verify().problem, "a cut tail followed by a new session must not verify")
        XCTAssertEqual(p.kind, .gap, "\(p)")
        XCTAssertTrue(p.message.contains("records 4…5 are missing"), p.message)
        // The chain continued from the checkpointed head (seq 5), never re-based on seq 3.
        XCTAssertEqual(p.seq, 6)
        try session(3)
        p = try XCTUnwrap(try verify().problem)
        XCTAssertEqual(p.kind, .gap, "ever after: \(p)")
    }

    /// Item 1: the whole audit/ directory deleted: the next writer starts at the checkpointed seq.
    func testWriterAfterTheWholeDirectoryWasDeletedChainsAGap() throws {
        try session(4)
        try? Process.run(URL(fileURLWithPath: "/usr/bin/chattr"), arguments: ["-R", "-a", dir]).waitUntilExit()
        try FileManager.default.removeItem(atPath: dir)
        try session(1)
        XCTAssertEqual(AuditSegments.list(dir).first?.firstSeq, 5, "the chain continues at seq 5 in a new segment")
        let p = try XCTUnwrap(try verify().problem)
        XCTAssertEqual(p.kind, .gap, "\(p)")
        XCTAssertTrue(p.message.contains("records 1…4 are missing"), p.message)
    }

    /// Item 2: the checkpoint deleted and the tail cut: the anchor still names the cut.
    func testAnchorNamesACutTailWhenTheCheckpointWasDeletedToo() throws {
        try session(6)
        XCTAssertGreaterThan(anchor.saves.withLock { $0 }, 0, "close anchors the head")
        try cutTo(2)
        checkpoints.value.withLock { $0 = nil }
        XCTAssertTrue(try verify().intact, "without the anchor nothing is left to compare with (the bug)")
        let p = try XCTUnwrap(try verify(withAnchor: true).problem)
        XCTAssertEqual(p.kind, .behindAnchor, "\(p)")
        XCTAssertTrue(p.message.contains("the anchor in the test's anchor") && p.message.contains("records 3…6"), p.message)
        // And a writer opened on it chains the gap from the anchored head.
        try session(1)
        XCTAssertEqual(try verify().problem?.kind, .gap)
    }

    /// The anchor moves at close and at group commits (when a durable record asked for it, or
    /// once per interval), never on the path of an append, a plain sync or a durable record.
    func testTheAnchorMovesOnlyAtGroupCommitsAndClose() throws {
        let log = try AuditLog.open(directory: dir, key: key, volumeID: "00", checkpoints: checkpoints, anchor: anchor, anchorInterval: 3600)
        for _ in 0..<100 { try log.append(AuditEvent("open", path: "/x")) }
        try log.sync()
        try log.append(AuditEvent("revoke"), durable: true)
        XCTAssertEqual(anchor.saves.withLock { $0 }, 0, "no provider call on the caller's path")
        try log.sync(anchor: .ifDue)
        XCTAssertEqual(anchor.saves.withLock { $0 }, 1, "the durable record asked for an anchor at the next group commit")
        try log.append(AuditEvent("open", path: "/y"))
        try log.sync(anchor: .ifDue)
        XCTAssertEqual(anchor.saves.withLock { $0 }, 1, "not again within the interval")
        try log.close()
        XCTAssertEqual(anchor.saves.withLock { $0 }, 2, "close anchors the last record")
        let anchored = try AuditCheckpoint.decode(try XCTUnwrap(anchor.value.withLock { $0 }), key: key)
        XCTAssertEqual(anchored.count, 102)
    }

    /// A durable record that arrives while the anchor of an earlier one is being written still
    /// gets its anchor at the next group commit (docs/audit-format.md: "within one tick of every
    /// durable record"), not an interval later: finishing the write must not drop its request.
    func testADurableRecordDuringAnAnchorWriteIsAnchoredAtTheNextGroupCommit() throws {
        let store = InterruptedAnchor()
        let log = try AuditLog.open(directory: dir, key: key, volumeID: "00", checkpoints: checkpoints, anchor: store, anchorInterval: 3600)
        try log.append(AuditEvent("revoke"), durable: true)
        store.during.withLock { $0 = { try log.append(AuditEvent("enable"), durable: true) } }
        try log.sync(anchor: .ifDue)
        XCTAssertEqual(store.base.saves.withLock { $0 }, 1, "the revoke's anchor")
        try log.sync(anchor: .ifDue)
        XCTAssertEqual(store.base.saves.withLock { $0 }, 2, "the enable, appended during that write, asked for the next group commit's anchor")
        let anchored = try AuditCheckpoint.decode(try XCTUnwrap(store.base.value.withLock { $0 }), key: key)
        XCTAssertEqual(anchored.count, log.count, "the anchor covers the enable")
        try log.sync(anchor: .ifDue)
        XCTAssertEqual(store.base.saves.withLock { $0 }, 2, "and no more until something asks or the interval passes")
        try log.close()
    }

    /// Item 3: a line written into denials.pending by someone else is not chained as cmkfs's.
    func testForgedPendingDenialIsNotChained() throws {
        try session(1)
        let denialKey = try SecretBytes.random(count: 32)
        XCTAssertTrue(PendingDenials.record(AuditEvent("mount-denied", result: "denied", error: "wrong PIN", uid: 0), directory: dir, key: denialKey))
        let forged = #"{"event":"revoke","result":"ok","time":"2026-12-01T00:00:00.000000Z","uid":1001,"detail":"forged"}"# + "\n"
        let handle = try XCTUnwrap(FileHandle(forWritingAtPath: dir + "/" + PendingDenials.fileName))
        handle.seekToEndOfFile()
        handle.write(Data(forged.utf8))
        try handle.close()
        let log = try AuditLog.open(directory: dir, key: key, volumeID: "00", checkpoints: checkpoints)
        XCTAssertEqual(try PendingDenials.ingest(into: log, directory: dir, key: denialKey), 1)
        try log.close()
        let text = try AuditSegments.list(dir).map { try String(contentsOfFile: $0.path, encoding: .utf8) }.joined()
        XCTAssertTrue(text.contains(#""event":"mount-denied""#), text)
        XCTAssertFalse(text.contains(#""event":"revoke""#) || text.contains(#""uid":1001"#), "the forged line was chained: \(text)")
        XCTAssertTrue(text.contains(PendingDenials.rejectedEvent) && text.contains("1 line(s)"), text)
        XCTAssertTrue(try verify().intact)
        XCTAssertTrue((try? String(contentsOfFile: dir + "/" + PendingDenials.rejectedFileName, encoding: .utf8))?.contains("forged") == true)
    }
}
