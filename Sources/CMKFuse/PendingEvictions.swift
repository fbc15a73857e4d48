import Dispatch
import Foundation
import Glibc
import Synchronization
import CMKSystem

/// Backing files whose last link an unlink removed, held open for a moment so that freeing their
/// blocks runs after the UNLINK's reply, on a thread of its own, instead of inside the unlink.
///
/// The backing filesystem frees an unlinked file's blocks when its last reference goes (ext4's
/// truncate at eviction), and on a filesystem mounted with `discard` and no journal that is a
/// synchronous TRIM of every extent: under `perf`, 10 of the 14 µs an `unlinkat` cost per file of
/// an `rm -rf`, with the request waiting on the disk besides. libfuse's `passthrough_ll` never
/// pays it in UNLINK (it holds every known inode open until the kernel forgets it); nor does
/// cmkfs now: the unlink opens the file (`O_PATH`) before removing its last link and hands the
/// descriptor here, and a worker closes it. The file's data is unreachable from the moment the
/// name is gone; only the blocks come back a moment later.
///
/// So that nothing done through the mount sees the space later than before, every request that
/// may take space in the backing filesystem (create, mknod, mkdir, symlink, link, rename, write,
/// setattr, fallocate, setxattr), `statfs` and the key-row batch first wait for the descriptors
/// held before them (`drain()`: one atomic load when none are). A crash in between leaves what
/// any open unlinked file leaves: an orphan inode the backing filesystem reclaims (ext4 at
/// mount, or its fsck without a journal). At most `limit` are held: past it, an unlink frees its
/// file itself, as before.
final class PendingEvictions: Sendable {
    /// Tests set CMKFS_EVICT_LIMIT to watch the table fill; 256 otherwise.
    static let limit = getenv("CMKFS_EVICT_LIMIT").flatMap { Int(String(cString: $0)) }.map { max(1, $0) } ?? 256
    /// How long the worker waits before closing: none; tests hold it back with
    /// CMKFS_EVICT_DELAY_MS to see who drains the table.
    static let delay = getenv("CMKFS_EVICT_DELAY_MS").flatMap { Int(String(cString: $0)) }.map { max(0, $0) } ?? 0

    private struct Table {
        var fds: [Int32] = []
        /// Whether the worker is up (draining, or lingering for more): a hold then wakes nobody.
        var working = false
    }
    private let table = Mutex(Table())
    /// How many descriptors are held or being closed: the fast path of `drain()`.
    private let outstanding = Atomic<Int>(0)
    /// Serializes the closers, so `drain()` returns only after every descriptor held before it
    /// was closed, the worker's batch in progress included.
    private let closing = Mutex(())
    private let worker = DispatchQueue(label: "cmkfs.evictions")
    /// How long the worker waits for more after a batch, so that a burst of unlinks (`rm -rf`)
    /// wakes it once per batch rather than once per file (a futex wake on the unlink's thread).
    static let linger = 0.0005

    /// Holds `fd` (an unlinked file's) until the worker closes it; with `limit` held already,
    /// closes it at once (the caller pays for the freeing, as before: the worker is behind).
    func hold(_ fd: consuming FileDescriptor) {
        let raw = fd.release()
        let (accepted, wake) = table.withLock { table -> (Bool, Bool) in
            guard table.fds.count < Self.limit else { return (false, false) }
            table.fds.append(raw)
            outstanding.add(1, ordering: .sequentiallyConsistent)
            defer { table.working = true }
            return (true, !table.working)
        }
        guard accepted else {
            _ = FileDescriptor(adopting: raw)
            return
        }
        guard wake else { return }
        if Self.delay == 0 { worker.async { [self] in work() } }
        else { worker.asyncAfter(deadline: .now() + .milliseconds(Self.delay)) { [self] in work() } }
    }

    /// The worker: closes what is held, then again after `linger` while more came meanwhile.
    private func work() {
        while true {
            drain()
            Thread.sleep(forTimeInterval: Self.linger)
            let more = table.withLock { table -> Bool in
                if table.fds.isEmpty { table.working = false }
                return table.working
            }
            if !more { return }
        }
    }

    /// Closes every held descriptor; returns once those held before the call are closed (their
    /// blocks freed).
    func drain() {
        guard outstanding.load(ordering: .sequentiallyConsistent) > 0 else { return }
        closing.withLock { _ in
            let batch = table.withLock { table in
                defer { table.fds.removeAll(keepingCapacity: true) }
                return table.fds
            }
            for raw in batch { _ = FileDescriptor(adopting: raw) }
            outstanding.subtract(batch.count, ordering: .sequentiallyConsistent)
        }
    }
}
