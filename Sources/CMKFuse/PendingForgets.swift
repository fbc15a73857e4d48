import Dispatch
import Glibc
import Logging
import Synchronization
import CMKFormat
import CMKVolume

/// Key rows of files whose last link is gone, deleted in batches rather than one write
/// transaction per unlink.
///
/// An `rm -rf` of 20,000 files spent about a seventh of the daemon's time committing one SQLite
/// transaction per file (WAL append, lock calls) while holding the namespace lock. The rows of an
/// unlinked file are dead weight, not a secret in the clear (the DEK in them is wrapped), so
/// their deletion may trail the unlink by a moment: a batch is written once the unlinks pause
/// for `quiet` (200 ms), at most `maxAge` (five times that) after its first file, or as soon as
/// it reaches `batchSize` (on another thread, not the unlink's), and before the mount answers a
/// control request or ends. A crash in between leaves the rows as orphans, which
/// `cmkfs fsck --repair` removes — the same state a crash between the unlink and a synchronous
/// delete left before.
///
/// Each transaction rewrites, through the WAL, nearly every page of the key table its random
/// file ids fall on, however few they are: an `rm -rf` of 5,000 files in 512-file batches, each
/// written 20 ms after its first file, made 10 transactions and 17,800 `pwrite`s of the WAL;
/// batches that last as long as the burst of unlinks make one or two.
final class PendingForgets: Sendable {
    /// Tests set CMKFS_FORGET_BATCH to fill a batch with fewer files.
    static let batchSize = getenv("CMKFS_FORGET_BATCH").flatMap { Int(String(cString: $0)) }.map { max(1, $0) } ?? 4096
    /// 200 ms; tests stretch it with CMKFS_FORGET_DELAY_MS to watch a batch wait.
    static let quiet = getenv("CMKFS_FORGET_DELAY_MS").flatMap { Int(String(cString: $0)) } ?? 200
    static let maxAge = 5 * quiet

    private struct Queue {
        var files: [FileID] = []
        /// When the first and the last file of the batch were queued (ms, monotonic).
        var first = 0, last = 0
        /// Whether a timer will look at the batch.
        var armed = false
    }

    private let volume: Volume
    private let pending = Mutex(Queue())
    /// Serializes the writers of batches, so `flush()` returns only after every file queued
    /// before it has been written (a caller about to read the table must not race a batch).
    private let writing = Mutex(())
    private let written = Atomic<Int>(0)

    /// Runs before each batch is written: the unlinked files' blocks are freed first
    /// (`PendingEvictions`), so the batch's refill of the metadata reserve finds them free.
    private let beforeWrite: @Sendable () -> Void

    init(volume: Volume, beforeWrite: @escaping @Sendable () -> Void = {}) {
        self.volume = volume
        self.beforeWrite = beforeWrite
    }

    /// Queues the rows of `fileID` for deletion.
    func add(_ fileID: FileID) {
        let now = Self.milliseconds()
        let (count, arm) = pending.withLock { queue -> (Int, Bool) in
            queue.files.append(fileID)
            if queue.files.count == 1 { queue.first = now }
            queue.last = now
            let arm = !queue.armed
            queue.armed = true
            return (queue.files.count, arm)
        }
        if count % Self.batchSize == 0 {
            // Written off the request thread: the unlink that fills a batch is answered without
            // waiting for the batch's transaction (or for another process's write lock on
            // meta.db), with the namespace lock, which it holds here, free for the next one.
            DispatchQueue.global().async { [self] in flush() }
        }
        if arm { wake(after: Self.quiet) }
    }

    private func wake(after ms: Int) {
        DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(max(ms, 1))) { [self] in due() }
    }

    /// The timer: writes the batch if the unlinks paused for `quiet` or it is `maxAge` old, else
    /// looks again when one of those will be so.
    private func due() {
        let now = Self.milliseconds()
        let wait = pending.withLock { queue -> Int? in
            guard !queue.files.isEmpty else {
                queue.armed = false
                return nil
            }
            let left = min(queue.last + Self.quiet, queue.first + Self.maxAge) - now
            if left <= 0 { queue.armed = false }
            return left > 0 ? left : nil
        }
        if let wait { wake(after: wait) } else { flush() }
    }

    /// Deletes every queued file's rows now; returns once they are committed (or failed).
    func flush() {
        writing.withLock { _ in
            let batch = pending.withLock { queue in
                defer { queue.files.removeAll(keepingCapacity: true) }
                return queue.files
            }
            guard !batch.isEmpty else { return }
            beforeWrite()
            written.add(1, ordering: .relaxed)
            do { try volume.forgetFiles(batch) } catch {
                // The files are gone; leftover rows are orphans for fsck, not a loss of data.
                FileSystem.logger.error("\(batch.count) files removed, but their key rows were not: \(error)")
            }
        }
    }

    /// Files queued and not yet written (for tests and status).
    var count: Int { pending.withLock { $0.files.count } }

    /// Batches written since the mount began (`cmkfs metrics`: `cmkfs_key_row_batches_total`).
    var batches: Int { written.load(ordering: .relaxed) }

    private static func milliseconds() -> Int {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return ts.tv_sec * 1000 + ts.tv_nsec / 1_000_000
    }
}
