import Foundation
import XCTest

/// What the mount does per removed file (issue 20: `rm -rf` is one UNLINK per file), counted with
/// strace on the mount's threads.
final class UnlinkCostTests: IntegrationTestCase {
    /// Removing a file that was opened through the mount takes its file id (whose key rows go)
    /// from its inode, not from its header: no open of the backing file per unlink, where each
    /// used to open it, read the header and close it. The key rows still go, a file never opened
    /// since the mount (its id not known) still has its header read, and a file replaced behind
    /// the mount's back by another file loses the rows of the id in the header it removed, as
    /// before (the known id is used only while the name holds the very object that had it).
    func testUnlinkOfAnOpenedFileReadsNoHeader() throws {
        sh("mkdir \(mnt)/u && cd \(mnt)/u && for i in $(seq 1 20); do echo $i > f$i; done && cat f* > /dev/null")
        let before = try fx.fileCount()
        let calls = try syscallsTraced("openat") {
            sh("rm \(mnt)/u/f*")
        }
        let opens = calls.filter { $0.contains("O_NOATIME") && !$0.contains("O_PATH") }
        XCTAssertLessThan(opens.count, 5, "20 unlinks of opened files opened \(opens.count) backing files: \(opens.prefix(3))")
        XCTAssertEqual(try fx.fileCount(), before - 20, "their key rows went all the same")

        // Known ids only: a file created before this mount and never opened has its header read.
        sh("echo cold > \(mnt)/cold && echo other > \(mnt)/other")
        try fx.remount()
        XCTAssertEqual(sh("ls \(mnt)"), "cold\nother\nu\n")
        let count = try fx.fileCount()
        sh("rm \(mnt)/cold")
        XCTAssertEqual(try fx.fileCount(), count - 1)

        // `kept` was opened (its id is known); its backing file is then replaced behind the
        // mount's back by a copy of `other` (another object, another file id): removing `kept`
        // removes the rows of the file id its name now holds, read from that header.
        sh("echo kept > \(mnt)/kept && cat \(mnt)/kept > /dev/null")
        let kept = try fx.backing("kept"), other = try fx.backing("other")
        sh("rm '\(kept)' && cp -p '\(other)' '\(kept)'")
        sh("rm \(mnt)/kept")
        XCTAssertEqual(try fx.fileCount(), count - 1, "one file's rows went")
        shFails("cat \(mnt)/other")
        XCTAssertEqual(sh("ls \(mnt)"), "other\nu\n")
    }
}

extension UnlinkCostTests {
    /// Rows of `cmkfs.edek` in meta.db, read straight from it (not through `status`, which writes
    /// the pending batch first).
    private func edekRows() -> Int {
        Int(sh("sqlite3 \(vol)/meta.db \"SELECT count(*) FROM file_attrs WHERE name = 'cmkfs.edek'\"")
            .trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
    }

    /// The mount again, with `environment` (`CMKFS_FORGET_*`, docs/testing.md).
    private func remount(_ environment: [String]) throws {
        try fx.unmount()
        let r = Shell.run("/usr/bin/env", environment + [MountFixture.binary, "mount", vol, mnt, "--kms-dir", fx.kms],
                          timeout: 60, logDir: fx.logs, label: "mount with \(environment.joined(separator: " "))")
        XCTAssertTrue(r.succeeded, "\(r)")
    }

    /// The unlink that fills a batch of key-row deletions (`PendingForgets`; 512 files here) is
    /// answered without waiting for the batch's transaction: the batch is written on a thread of
    /// its own. Shown with meta.db's write lock held by another process for 4 s (as a `cmkfs`
    /// command may hold it; under the mount's 5 s busy timeout, so the waiting batches still go):
    /// `rm` of 1,100 files (two full batches) returns while the lock is still held, where an
    /// unlink that filled a batch used to wait for it (the first batch waits for the lock either
    /// way); the rows still go once the lock is free. The lock outliving `rm` is the check, not a
    /// time bound: a slow machine only narrows it.
    func testAnUnlinkThatFillsABatchDoesNotWaitForItsWrite() throws {
        try remount(["CMKFS_FORGET_BATCH=512"])
        let rows = { self.edekRows() }
        sh("mkdir \(mnt)/many && cd \(mnt)/many && seq 1 1100 | xargs touch")
        XCTAssertEqual(rows(), 1100)
        let locked = fx.root + "/locked"
        let holder = Process()
        holder.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        holder.arguments = ["-c", """
            import sqlite3, sys, time
            db = sqlite3.connect(sys.argv[1], isolation_level=None)
            db.execute('BEGIN EXCLUSIVE')
            open(sys.argv[2], 'w').close()
            time.sleep(4)
            db.execute('COMMIT')
            """, vol + "/meta.db", locked]
        try holder.run()
        defer { if holder.isRunning { holder.terminate() }; holder.waitUntilExit() }
        XCTAssertTrue(waitUntil(deadline: 30) { FileManager.default.fileExists(atPath: locked) }, "the lock holder started")
        let start = Date()
        sh("rm -rf \(mnt)/many")
        let took = Date().timeIntervalSince(start)
        XCTAssertTrue(holder.isRunning, "the lock was still held when rm returned (rm of 1,100 files took \(String(format: "%.2f", took)) s; the lock is held 4 s)")
        report("rm of 1,100 files under a locked meta.db", seconds: took)
        holder.waitUntilExit()
        var left = rows()
        waitUntil(deadline: 30, interval: 0.05) { left = rows(); return left == 0 }
        XCTAssertEqual(left, 0, "the rows went once the lock was free")
    }

    /// A burst of unlinks is one batch of key-row deletions, however many files: each
    /// transaction rewrites most pages of the key table, so 512-file batches written 20 ms after
    /// their first file made an `rm -rf` of 2,000 files four transactions or more; a batch now
    /// waits for the unlinks to pause (2 s here, so a slow machine's pauses between unlinks do
    /// not split it; a stall that long still might, hence "or two", and the count tolerates a
    /// third) and the rows still go.
    func testABurstOfUnlinksIsDeletedInOneOrTwoBatches() throws {
        func batches() -> Int? {
            let r = fx.cmkfs(["metrics", vol])
            XCTAssertTrue(r.succeeded, "\(r)")
            return r.stdout.split(separator: "\n").first { $0.hasPrefix("cmkfs_key_row_batches_total ") }
                .flatMap { Int($0.dropFirst("cmkfs_key_row_batches_total ".count)) }
        }
        try remount(["CMKFS_FORGET_DELAY_MS=2000"])
        sh("mkdir \(mnt)/many && cd \(mnt)/many && seq 1 2000 | xargs touch")
        XCTAssertEqual(edekRows(), 2000)
        let before = try XCTUnwrap(batches())
        sh("rm -rf \(mnt)/many")
        var left = edekRows()
        waitUntil(deadline: 60, interval: 0.1) { left = self.edekRows(); return left == 0 }
        XCTAssertEqual(left, 0, "the rows of 2,000 unlinked files went without a control request")
        let written = try XCTUnwrap(batches()) - before
        XCTAssertGreaterThanOrEqual(written, 1)
        XCTAssertLessThanOrEqual(written, 3, "2,000 unlinks in one burst took \(written) transactions")
    }
}
