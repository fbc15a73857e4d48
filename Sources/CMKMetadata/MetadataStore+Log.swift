import CSQLite
import CMKSystem
import Glibc
import Synchronization

/// The WAL's length (in frames) after the last commit, as the commit hook reports it
/// (`Connection.watchLog`), and the lengths at which it is checkpointed.
final class WALWatch: Sendable {
    /// `checkpointIfDue` copies the WAL into the database file from this length on (SQLite's own
    /// automatic checkpoint threshold).
    static let checkpointFrames = 1000
    /// From this length on, `checkpointIfDue` completes the checkpoint under the store's lock
    /// even while commits keep coming (below it, it waits for a tick with none in between).
    static let catchUpFrames = 4 * checkpointFrames
    /// A commit that leaves the WAL this long checkpoints it itself: the bound when nobody calls
    /// `checkpointIfDue` (about 32 MiB of 4 KiB pages).
    let hardLimit = 8 * checkpointFrames
    let frames = Atomic<Int>(0)
    /// The WAL's length at the previous `checkpointIfDue` (unchanged since: a quiet interval).
    let seen = Atomic<Int>(0)
    /// How much of the WAL the last copy by `checkpointIfDue` left in the database file.
    let copied = Atomic<Int>(0)
    /// Copies `checkpointIfDue` started (for tests).
    let copies = Atomic<Int>(0)
}

/// Durability and checkpoints of the write-ahead log.
///
/// The store runs WAL with synchronous=NORMAL: a commit is written to the WAL (it survives a
/// crash of the process) but not synced (a power cut can lose it). `makeDurable` syncs the WAL;
/// copying the WAL into the database file (a checkpoint) is a separate matter of keeping the WAL
/// short, which a mount moves off the threads that answer requests (`deferCheckpoints`).
extension MetadataStore {
    /// Makes every committed row durable now: syncs the WAL (`fdatasync` of `meta.db-wal`),
    /// outside the store's lock, so other callers go on committing meanwhile.
    ///
    /// Call this when an application fsyncs a file, so the file's key row is never less durable
    /// than its content. Costs nothing when this connection wrote no row since the last call.
    /// Sound without a checkpoint: SQLite syncs the WAL's header whenever it starts the WAL over,
    /// and copies frames into the database file (syncing it) before it reuses them, so every
    /// commit the sync covered stays either in the synced WAL or in the synced database file.
    public func makeDurable() throws(MetadataError) {
        let pending = try locked { (c) throws(MetadataError) -> (changes: Int64, path: String)? in
            c.hasUnsyncedWrites ? (c.totalChanges, c.path) : nil
        }
        guard let pending else { return }
        do {
            // A descriptor of our own, closed again: SQLite keeps no lock on the -wal file (its
            // locks are on meta.db and meta.db-shm, which are never opened here, since closing a
            // descriptor drops the process's locks on that file).
            let file = try FileDescriptor.open(pending.path + "-wal", O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
            try file.descriptor.fdatasync()
        } catch where error.errno == .ENOENT {
            // No WAL: the last connection to close copied it into the database file, synced it
            // and removed it. Everything committed is there.
        } catch {
            throw .io(code: sqliteIOErrFsync, message: "\(pending.path)-wal: cannot sync the write-ahead log: \(error)")
        }
        try locked { (c) throws(MetadataError) in c.markSynced(upTo: pending.changes) }
    }

    /// Whether rows were written since the last durable point (for tests).
    var hasUnsyncedWrites: Bool {
        (try? locked { $0.hasUnsyncedWrites }) ?? false
    }

    /// Copies the WAL into the database file (syncing both), so `meta.db` alone holds every
    /// committed row, waiting for readers as long as the busy timeout.
    public func checkpoint() throws(MetadataError) {
        try locked { (c) throws(MetadataError) in try c.checkpoint() }
    }

    /// Takes the WAL's checkpoints off the threads that commit (a mount's request threads): from
    /// now on a commit only reports the WAL's length, and `checkpointIfDue`, called periodically
    /// on a thread of the caller's (the mount's audit group commit), copies it into the database
    /// file. A commit still checkpoints by itself when the WAL reaches `WALWatch.hardLimit`
    /// frames, so the WAL stays bounded even if `checkpointIfDue` is never called.
    public func deferCheckpoints() throws(MetadataError) {
        let path = try locked { (c) throws(MetadataError) in c.path }
        try checkpointer.withLock { (slot: inout sending Connection?) throws(MetadataError) in
            guard slot == nil else { return }
            let connection = try Connection(path: path)
            // A read, so the connection opens the WAL: until then a checkpoint through it finds
            // no WAL and copies nothing.
            _ = try connection.pragmaInt("user_version")
            slot = connection
        }
        try locked { (c) throws(MetadataError) in c.watchLog(wal) }
    }

    /// When the WAL holds `WALWatch.checkpointFrames` frames not yet copied, or holds that many
    /// and nothing was committed since the last call: copies the WAL into the database file on
    /// the calling thread through the checkpoint connection (the copy and its two syncs hold no
    /// lock of the store's), then, under the store's lock so no commit comes in between, copies
    /// what was committed meanwhile and starts the WAL over with a one-page commit (which syncs
    /// the new WAL header here, not on the next request's thread). While commits keep coming,
    /// that second step waits for a quiet call, or for `WALWatch.catchUpFrames`. Nothing to do
    /// before `deferCheckpoints`.
    public func checkpointIfDue() throws(MetadataError) {
        let wal = self.wal
        let frames = wal.frames.load(ordering: .relaxed)
        let quiet = wal.seen.exchange(frames, ordering: .relaxed) == frames
        guard frames >= WALWatch.checkpointFrames else { return }
        // More than the WAL holds: another process's commit started it over since.
        let copied = min(wal.copied.load(ordering: .relaxed), frames)
        guard quiet || frames - copied >= WALWatch.checkpointFrames else { return }
        wal.copies.add(1, ordering: .relaxed)
        let first = try checkpointer.withLock { (slot: inout sending Connection?) throws(MetadataError) -> (log: Int, copied: Int)? in
            try slot?.passiveCheckpoint()
        }
        guard let first else { return }
        wal.copied.store(first.copied, ordering: .relaxed)
        try locked { (c) throws(MetadataError) in
            let frames = wal.frames.load(ordering: .relaxed)
            if frames != first.log && frames < WALWatch.catchUpFrames { return }
            let done = try checkpointer.withLock { (slot: inout sending Connection?) throws(MetadataError) -> (log: Int, copied: Int)? in
                try slot?.passiveCheckpoint()
            }
            // Not all copied: a reader (another process) still uses the WAL's frames; later.
            guard let done, done.log == done.copied, done.log > 0 else { return }
            try c.rewriteSchemaVersion()
            wal.copied.store(0, ordering: .relaxed)
        }
    }

    /// The WAL's length in frames after the last commit (0 before `deferCheckpoints`), for tests.
    var walFrames: Int { wal.frames.load(ordering: .relaxed) }
}
