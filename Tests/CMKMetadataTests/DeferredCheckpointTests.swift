import Foundation
import XCTest
@testable import CMKMetadata

/// A mount defers meta.db's checkpoints to its group-commit thread (`deferCheckpoints`,
/// `checkpointIfDue`): a commit on a request thread then neither copies the WAL nor starts it
/// over (and syncs its header), and the WAL stays bounded all the same.
final class DeferredCheckpointTests: MetadataTestCase {
    private func walBytes() -> Int {
        ((try? FileManager.default.attributesOfItem(atPath: path("meta.db") + "-wal"))?[.size] as? NSNumber)?.intValue ?? 0
    }

    /// Nobody calls `checkpointIfDue`: commits alone keep the WAL under the hard limit.
    func testCommitsAloneKeepTheLogBounded() throws {
        let store = try makeStore()
        defer { store.close() }
        try store.deferCheckpoints()
        var longest = 0
        for i in 0..<5000 {
            try store.insertFileKey(fileID: fileID(i), key(UInt8(i & 0xFF)))
            longest = max(longest, store.walFrames)
        }
        XCTAssertGreaterThan(longest, WALWatch.checkpointFrames, "the commits themselves did not checkpoint below the hard limit")
        XCTAssertLessThanOrEqual(longest, store.wal.hardLimit + 16, "the WAL grew past the hard limit: \(longest) frames")
        XCTAssertLessThanOrEqual(walBytes(), (store.wal.hardLimit + 16) * (4096 + 24) + 32)
        XCTAssertEqual(try store.fileCount(), 5000)
    }

    /// `checkpointIfDue` copies the WAL and starts it over on its own thread: the WAL is one
    /// frame long after it (its own one-page commit), and every row is in the main file.
    func testCheckpointIfDueStartsTheLogOverOnItsThread() throws {
        let store = try makeStore()
        defer { store.close() }
        try store.checkpointIfDue()  // not deferred yet: nothing to do, not an error
        try store.deferCheckpoints()
        var i = 0
        while store.walFrames < WALWatch.checkpointFrames {
            try store.insertFileKey(fileID: fileID(i), key(1))
            i += 1
        }
        let before = store.walFrames
        try store.checkpointIfDue()
        XCTAssertEqual(store.walFrames, 1, "the WAL was not started over (\(before) frames before)")
        try store.makeDurable()
        let copy = path("copy.db")
        try FileManager.default.copyItem(atPath: path("meta.db"), toPath: copy)
        let copied = try MetadataStore.open(at: copy)
        defer { copied.close() }
        XCTAssertEqual(try copied.fileCount(), i, "the main file alone holds every row")
        // Not due: the next call does nothing.
        try store.insertFileKey(fileID: fileID(i), key(1))
        try store.checkpointIfDue()
        XCTAssertGreaterThan(store.walFrames, 1)
    }

    /// While another connection (a `cmkfs` command) reads an old snapshot, the copy cannot
    /// finish: the WAL is not started over, nothing fails, and it is once the reader is gone.
    func testAReaderInAnotherConnectionDefersTheRestart() throws {
        let store = try makeStore()
        defer { store.close() }
        try store.deferCheckpoints()
        try store.insertFileKey(fileID: fileID(0), key(1))
        let reader = try Connection(path: path("meta.db"))
        try reader.execute("BEGIN", "test")
        _ = try reader.execute("SELECT count(*) FROM file_attrs", "test")
        var i = 1
        while store.walFrames < WALWatch.checkpointFrames {
            try store.insertFileKey(fileID: fileID(i), key(1))
            i += 1
        }
        try store.checkpointIfDue()
        XCTAssertGreaterThan(store.walFrames, 1, "started over under a reader's snapshot")
        try reader.execute("COMMIT", "test")
        try store.checkpointIfDue()
        XCTAssertEqual(store.walFrames, 1)
        XCTAssertEqual(try store.fileCount(), i)
    }

    /// With commits coming all the time and a reader holding the WAL, a call copies only once
    /// `checkpointFrames` more frames have come: not at every 100 ms tick, which (two syncs each)
    /// slowed an `rm -rf`'s unlinks to twice their time.
    func testCopiesOnlyOnceEnoughNewFramesCame() throws {
        let store = try makeStore()
        defer { store.close() }
        try store.deferCheckpoints()
        var i = 0
        while store.walFrames < WALWatch.checkpointFrames {
            try store.insertFileKey(fileID: fileID(i), key(1))
            i += 1
        }
        let reader = try Connection(path: path("meta.db"))
        try reader.execute("BEGIN", "test")
        _ = try reader.execute("SELECT count(*) FROM file_attrs", "test")
        try store.insertFileKey(fileID: fileID(i), key(1))
        i += 1
        try store.checkpointIfDue()
        XCTAssertEqual(store.wal.copies.load(ordering: .relaxed), 1)
        XCTAssertGreaterThan(store.walFrames, 1, "started over under a reader's snapshot")
        for _ in 0..<3 {
            try store.insertFileKey(fileID: fileID(i), key(1))
            i += 1
            try store.checkpointIfDue()
        }
        XCTAssertEqual(store.wal.copies.load(ordering: .relaxed), 1, "copied again with only a few new frames")
        try reader.execute("COMMIT", "test")
        try store.checkpointIfDue()  // quiet since the last call: copies the rest and starts over
        XCTAssertEqual(store.walFrames, 1)
        XCTAssertEqual(try store.fileCount(), i)
    }
}
