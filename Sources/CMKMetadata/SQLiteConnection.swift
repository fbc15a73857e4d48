import CSQLite
import Glibc

/// One SQLite connection plus its cache of prepared statements.
///
/// Not thread-safe and not Sendable: `MetadataStore` keeps it inside a `Mutex`, so exactly one
/// thread uses it at a time. That is also why it is opened with `SQLITE_OPEN_NOMUTEX`; SQLite's
/// own per-connection mutex would only duplicate ours.
final class Connection {
    /// How long a statement (and a checkpoint) waits for another connection's lock.
    static let busyTimeoutMilliseconds = 5000

    /// The database path, for error messages.
    let path: String
    private let db: OpaquePointer
    private var statements: [String: Statement] = [:]
    // sqlite3_total_changes at the last durable point; a different value means rows were
    // written since, so makeDurable has work to do. Starts "dirty": a WAL left by a process that
    // crashed may hold commits nobody synced, and the first makeDurable must cover them too.
    private var changesAtLastSync: Int64 = -1

    /// Opens an existing file read-write; never creates one (creation is `MetadataStore.create`).
    init(path: String) throws(MetadataError) {
        var handle: OpaquePointer?
        // Through the VFS that allocates the -shm file's blocks before SQLite stores into them
        // (AllocatingShmVFS.swift): a full disk is then SQLITE_FULL, never SIGBUS.
        let rc = sqlite3_open_v2(path, &handle, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX,
                                 AllocatingShmVFS.registered ? AllocatingShmVFS.name : nil)
        guard rc == SQLITE_OK, let handle else {
            // open_v2 may allocate a handle even on failure; it carries the message and must be closed.
            let error = MetadataError.sqlite(rc, db: handle, path: path, context: "opening the database")
            sqlite3_close_v2(handle)
            throw error
        }
        self.path = path
        self.db = handle
        sqlite3_extended_result_codes(handle, 1)
        sqlite3_busy_timeout(handle, Int32(Self.busyTimeoutMilliseconds))
    }

    deinit {
        // Finalize first so the close below releases the file now rather than leaving a zombie.
        statements.removeAll()
        sqlite3_close_v2(db)
    }

    /// Runs `body` with the cached prepared statement for `sql`, preparing it on first use.
    ///
    /// The statement is reset afterwards whatever happens, so no read transaction stays open.
    func withStatement<R>(_ sql: String, _ body: (Statement) throws(MetadataError) -> R) throws(MetadataError) -> R {
        let statement: Statement
        if let cached = statements[sql] {
            statement = cached
        } else {
            statement = try Statement(db: db, path: path, sql: sql, persistent: true)
            statements[sql] = statement
        }
        defer { statement.reset() }
        return try body(statement)
    }

    /// The statements prepared and cached so far (tests of how many a call uses).
    var cachedStatements: Int { statements.count }

    /// Steps a parameterless cached statement (transaction control) to completion.
    private func runCached(_ sql: String, _ context: String) throws(MetadataError) {
        try withStatement(sql) { (s) throws(MetadataError) in
            while try s.step(context) {}
        }
    }

    /// Runs one statement once, without caching it (schema changes, pragmas); returns the first
    /// column of the first row as text, if the statement produced one.
    @discardableResult
    func execute(_ sql: String, _ context: String) throws(MetadataError) -> String? {
        let statement = try Statement(db: db, path: path, sql: sql, persistent: false)
        guard try statement.step(context) else { return nil }
        let first = statement.isNull(0) ? nil : statement.text(0)
        while try statement.step(context) {}
        return first
    }

    /// The VDBE opcodes SQLite compiles `sql` into (`EXPLAIN`), for tests of a statement's cost.
    func opcodes(_ sql: String) throws(MetadataError) -> [String] {
        let statement = try Statement(db: db, path: path, sql: "EXPLAIN " + sql, persistent: false)
        var names: [String] = []
        while try statement.step("explaining a statement") { names.append(statement.text(1)) }
        return names
    }

    /// Reads an integer pragma such as `user_version`.
    func pragmaInt(_ name: String) throws(MetadataError) -> Int {
        let statement = try Statement(db: db, path: path, sql: "PRAGMA \(name)", persistent: false)
        guard try statement.step("reading \(name)") else {
            throw .corrupt("\(path): PRAGMA \(name) returned no value")
        }
        return statement.int(0)
    }

    /// Runs `body` inside `BEGIN IMMEDIATE` … `COMMIT`, rolling back if it throws.
    ///
    /// IMMEDIATE takes the write lock up front: a deferred transaction that reads and then
    /// writes can fail with SQLITE_BUSY mid-way without the busy handler ever being consulted.
    func transaction<R>(_ context: String, _ body: () throws(MetadataError) -> R) throws(MetadataError) -> R {
        try runCached("BEGIN IMMEDIATE", context)
        do throws(MetadataError) {
            let result = try body()
            try runCached("COMMIT", context)
            return result
        } catch {
            // SQLite rolls back by itself after some errors (SQLITE_FULL, I/O); a second
            // ROLLBACK would then fail, so only issue one while the transaction is still open.
            if sqlite3_get_autocommit(db) == 0 {
                try? runCached("ROLLBACK", context)
            }
            throw error
        }
    }

    /// True when rows were written since the last durable point (`checkpoint()` or `markSynced`).
    var hasUnsyncedWrites: Bool { sqlite3_total_changes64(db) != changesAtLastSync }

    /// The rows this connection has written so far (`sqlite3_total_changes64`), for `markSynced`.
    var totalChanges: Int64 { sqlite3_total_changes64(db) }

    /// Records that every row up to `changes` (a `totalChanges` taken before a sync of the WAL)
    /// is durable.
    func markSynced(upTo changes: Int64) {
        if changesAtLastSync < changes { changesAtLastSync = changes }
    }

    /// Reports the WAL's length in frames to `watch` after every commit of this connection, in
    /// place of SQLite's automatic checkpoint; a commit that leaves the WAL at
    /// `watch.hardLimit` frames or more still checkpoints it (PASSIVE) at once, so the WAL stays
    /// bounded when nobody calls `MetadataStore.checkpointIfDue`.
    func watchLog(_ watch: WALWatch) {
        // The context is unretained: the store owns `watch` and closes this connection (which
        // drops the hook) before it lets `watch` go.
        sqlite3_wal_hook(db, { context, db, name, frames in
            guard let context else { return SQLITE_OK }
            let watch = Unmanaged<WALWatch>.fromOpaque(context).takeUnretainedValue()
            watch.frames.store(Int(frames), ordering: .relaxed)
            if Int(frames) >= watch.hardLimit {
                // What SQLite's own automatic checkpoint would have done; BUSY (another
                // checkpoint running) is fine, it is tried again at the next commit.
                _ = sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, nil, nil)
            }
            return SQLITE_OK
        }, Unmanaged.passUnretained(watch).toOpaque())
    }

    /// A PASSIVE checkpoint: copies as much of the WAL into the database file as no reader
    /// needs, syncing the WAL before and the database file after, without waiting for anyone.
    /// Returns the WAL's length and how much of it is now in the database file (in frames);
    /// nil when another connection was checkpointing (SQLITE_BUSY: try again later).
    func passiveCheckpoint() throws(MetadataError) -> (log: Int, copied: Int)? {
        var log: Int32 = 0, copied: Int32 = 0
        let rc = sqlite3_wal_checkpoint_v2(db, nil, SQLITE_CHECKPOINT_PASSIVE, &log, &copied)
        if rc == SQLITE_BUSY { return nil }
        guard rc == SQLITE_OK else {
            throw MetadataError.sqlite(rc, db: db, path: path, context: "checkpointing the write-ahead log")
        }
        return (Int(log), Int(copied))
    }

    /// Copies the WAL into the database file and, if that copied all of it, starts it over:
    /// true when the next commit writes from the WAL's start. False (and no error) when a reader
    /// still needs the WAL or the copy itself found no room.
    func startOver() throws(MetadataError) -> Bool {
        guard let done = try passiveCheckpoint(), done.log == done.copied, done.log > 0 else { return false }
        try rewriteSchemaVersion()
        return true
    }

    /// A one-page write transaction (the schema version, rewritten unchanged). After a complete
    /// checkpoint, the next commit starts the WAL over and syncs its new header; this makes that
    /// commit happen on the caller's thread.
    func rewriteSchemaVersion() throws(MetadataError) {
        try transaction("starting the write-ahead log over") { () throws(MetadataError) in
            let version = try pragmaInt("user_version")
            try execute("PRAGMA user_version = \(version)", "starting the write-ahead log over")
        }
    }

    /// Copies the WAL into the database file, syncing both.
    ///
    /// With synchronous=NORMAL a commit is written to the WAL but not fsynced; a FULL checkpoint
    /// fsyncs the WAL before backfilling and the database file after, and it waits (through the
    /// busy handler) for readers instead of stopping short, so afterwards every commit is on disk.
    ///
    /// Another process checkpointing at the same moment (an auto-checkpoint after its commit)
    /// holds the checkpointer lock, and SQLite answers SQLITE_BUSY at once without consulting
    /// the busy handler; that is retried here for as long as the busy timeout.
    func checkpoint() throws(MetadataError) {
        let changes = sqlite3_total_changes64(db)
        var rc = sqlite3_wal_checkpoint_v2(db, nil, SQLITE_CHECKPOINT_FULL, nil, nil)
        var waited = 0
        while rc == SQLITE_BUSY && waited < Self.busyTimeoutMilliseconds {
            usleep(2_000)
            waited += 2
            rc = sqlite3_wal_checkpoint_v2(db, nil, SQLITE_CHECKPOINT_FULL, nil, nil)
        }
        guard rc == SQLITE_OK else {
            throw MetadataError.sqlite(rc, db: db, path: path, context: "checkpointing the write-ahead log")
        }
        changesAtLastSync = changes
    }
}
