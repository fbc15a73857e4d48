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
/// their deletion may trail the unlink by a moment: a batch is written `delay` after its first
/// file, or as soon as it reaches `batchSize` (on another thread, not the unlink's), and before
/// the mount answers a control request or ends. A crash in between leaves the rows as orphans, which `cmkfs fsck --repair` removes —
/// the same state a crash between the unlink and a synchronous delete left before.
final class PendingForgets: Sendable {
    static let batchSize = 512
    /// 20 ms; tests stretch it with CMKFS_FORGET_DELAY_MS to watch a batch wait.
    static let delay = DispatchTimeInterval.milliseconds(
        getenv("CMKFS_FORGET_DELAY_MS").flatMap { Int(String(cString: $0)) } ?? 20)

    private let volume: Volume
    private let pending = Mutex<[FileID]>([])
    /// Serializes the writers of batches, so `flush()` returns only after every file queued
    /// before it has been written (a caller about to read the table must not race a batch).
    private let writing = Mutex(())

    init(volume: Volume) { self.volume = volume }

    /// Queues the rows of `fileID` for deletion.
    func add(_ fileID: FileID) {
        let count = pending.withLock { queue in
            queue.append(fileID)
            return queue.count
        }
        if count % Self.batchSize == 0 {
            // Written off the request thread: the unlink that fills a batch is answered without
            // waiting for the batch's transaction (or for another process's write lock on
            // meta.db), with the namespace lock, which it holds here, free for the next one.
            DispatchQueue.global().async { [self] in flush() }
        } else if count == 1 {
            DispatchQueue.global().asyncAfter(deadline: .now() + Self.delay) { [self] in flush() }
        }
    }

    /// Deletes every queued file's rows now; returns once they are committed (or failed).
    func flush() {
        writing.withLock { _ in
            let batch = pending.withLock { queue in
                defer { queue.removeAll(keepingCapacity: true) }
                return queue
            }
            guard !batch.isEmpty else { return }
            do { try volume.forgetFiles(batch) } catch {
                // The files are gone; leftover rows are orphans for fsck, not a loss of data.
                FileSystem.logger.error("\(batch.count) files removed, but their key rows were not: \(error)")
            }
        }
    }

    /// Files queued and not yet written (for tests and status).
    var count: Int { pending.withLock { $0.count } }
}
