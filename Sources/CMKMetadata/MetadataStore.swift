import CSQLite
import Synchronization

/// The volume's metadata database: volume facts, master-key versions, and per-file key and
/// xattr rows. See Schema.swift for the on-disk layout.
///
/// Thread-safe. One SQLite connection serves every caller under one lock: the store is used on
/// open, create and unlink, not per read or write, so contention is low, and a single connection
/// means a single writer and a single statement cache.
public final class MetadataStore: Sendable {
    /// The schema version this build creates and the newest it opens.
    public static let schemaVersion = Schema.version

    // nil once closed. Mutex<Value> is Sendable for any Value, and the non-Sendable Connection
    // never escapes the withLock closures, so the store needs no @unchecked.
    private let state: Mutex<Connection?>
    /// Room kept for the database on a full disk (MetadataReserve.swift).
    let reserve: MetadataReserve
    /// The WAL's length as the last commit left it, once `deferCheckpoints` watches it.
    let wal = WALWatch()
    /// A second connection that only checkpoints (`checkpointIfDue`), so the copy and its syncs
    /// hold no lock the store's callers take; nil until `deferCheckpoints`. Lock order: `state`
    /// before `checkpointer`.
    let checkpointer = Mutex<Connection?>(nil)

    private init(_ connection: sending Connection, reserve: MetadataReserve) {
        state = Mutex(connection)
        self.reserve = reserve
    }

    deinit { close() }

    /// Creates a new database at `path` with the current schema.
    ///
    /// The file must not exist (`.exists` otherwise) and is created with mode 0600. On any
    /// failure the partly created files are removed.
    public static func create(at path: String) throws(MetadataError) -> MetadataStore {
        try createExclusiveFile(path)
        do throws(MetadataError) {
            let connection = try Connection(path: path)
            try Schema.create(connection)
            // A new volume's schema should not depend on a later fsync to exist after a power cut.
            try connection.checkpoint()
            let reserve = MetadataReserve(databasePath: path)
            reserve.refill()
            return MetadataStore(connection, reserve: reserve)
        } catch {
            removeDatabaseFiles(path)
            throw error
        }
    }

    /// Opens an existing database, upgrading an older schema in place.
    ///
    /// Throws `.notFound` if nothing exists at `path`, `.corrupt` if the file is not a SQLite
    /// database or not a cmkfs one, and `.newerSchema` if a newer cmkfs wrote it. On a full
    /// disk the reserve is released so the database opens (`.full` only when even that is not
    /// enough); it is allocated again whenever there is room.
    public static func open(at path: String) throws(MetadataError) -> MetadataStore {
        guard !pathIsMissing(path) else { throw .notFound }
        let reserve = MetadataReserve(databasePath: path)
        let connection: Connection
        do {
            connection = try openConnection(path)
        } catch .full where reserve.release() {
            connection = try openConnection(path)
        }
        reserve.refill()
        return MetadataStore(connection, reserve: reserve)
    }

    private static func openConnection(_ path: String) throws(MetadataError) -> sending Connection {
        let connection = try Connection(path: path)
        try Schema.openExisting(connection)
        return connection
    }

    /// Finalizes every statement and closes the database. Idempotent; later calls on the store
    /// throw `.io` with `SQLITE_MISUSE`.
    public func close() {
        checkpointer.withLock { $0 = nil }
        state.withLock { $0 = nil }
    }

    /// Runs `body` with the connection under the lock. When the disk is full, the reserve is
    /// released and `body` run once more: a failed statement or transaction changed nothing
    /// (SQLite rolls it back), so running it again is safe. `growing` work (rows for new files,
    /// user xattrs, new long names: what file data would use) never takes the reserve: it gets
    /// `.full` (ENOSPC) like the data itself, and the room stays for reads, deletions, the audit
    /// checkpoint and the next open.
    func locked<R: Sendable>(growing: Bool = false, _ body: (Connection) throws(MetadataError) -> R) throws(MetadataError) -> R {
        let reserve = self.reserve
        if growing {
            return try state.withLock { (slot: inout sending Connection?) throws(MetadataError) -> R in
                guard let connection = slot else { throw MetadataError.misuse("the metadata store is closed") }
                return try body(connection)
            }
        }
        return try state.withLock { (slot: inout sending Connection?) throws(MetadataError) -> R in
            guard let connection = slot else { throw MetadataError.misuse("the metadata store is closed") }
            do throws(MetadataError) { return try body(connection) } catch .full {
                // First, room of the database's own: a WAL copied into meta.db and started over
                // takes its next frames in blocks it already has (checkpoints no longer start it
                // over every 100 ms, so it often ends past them), and the reserve stays whole.
                if (try? connection.startOver()) == true {
                    do throws(MetadataError) { return try body(connection) } catch .full {}
                }
                guard reserve.release() else { throw .full }
                return try body(connection)
            }
        }
    }

    // MARK: Volume facts

    /// Sets (inserting or overwriting) the volume-level value for `key`.
    public func setMeta(_ key: String, _ value: [UInt8]) throws(MetadataError) {
        try locked { (c) throws(MetadataError) in try Self.upsertMeta(c, key, value) }
    }

    /// The volume-level value for `key`, or nil if it was never set.
    public func meta(_ key: String) throws(MetadataError) -> [UInt8]? {
        try locked { (c) throws(MetadataError) in
            try c.withStatement("SELECT value FROM meta WHERE key = ?1") { (s) throws(MetadataError) in
                try s.bind(1, key)
                return try s.step("reading a volume fact") ? s.blob(0) : nil
            }
        }
    }

    // MARK: Master-key versions

    /// Records a master-key version; `.exists` if that key id and version are already recorded.
    ///
    /// The store does not enforce a single active version; the caller deactivates the old one
    /// (ideally before adding the new one, as `activeKeyVersion` picks the highest active).
    public func addKeyVersion(_ record: KeyVersionRecord) throws(MetadataError) {
        try locked { (c) throws(MetadataError) in
            try c.withStatement("INSERT INTO key_versions(key_id, version, state, created_at) VALUES(?1, ?2, ?3, ?4)") { (s) throws(MetadataError) in
                try s.bind(1, record.keyId)
                try s.bind(2, record.version)
                try s.bind(3, record.state.rawValue)
                try s.bind(4, record.createdAt)
                try s.step("recording a key version")
            }
        }
    }

    /// Changes the state of a recorded key version; `.notFound` if it is not recorded.
    public func setKeyVersionState(keyId: String, version: Int, _ newState: KeyVersionState) throws(MetadataError) {
        try locked { (c) throws(MetadataError) in
            let changed = try c.withStatement("UPDATE key_versions SET state = ?3 WHERE key_id = ?1 AND version = ?2") { (s) throws(MetadataError) in
                try s.bind(1, keyId)
                try s.bind(2, version)
                try s.bind(3, newState.rawValue)
                try s.step("changing a key version's state")
                return s.changes
            }
            if changed == 0 { throw .notFound }
        }
    }

    /// Every recorded key version, ordered by version (then key id).
    public func keyVersions() throws(MetadataError) -> [KeyVersionRecord] {
        try locked { (c) throws(MetadataError) in
            try c.withStatement("SELECT key_id, version, state, created_at FROM key_versions ORDER BY version, key_id") { (s) throws(MetadataError) in
                var records: [KeyVersionRecord] = []
                while try s.step("listing key versions") { records.append(try Self.keyVersion(s, path: c.path)) }
                return records
            }
        }
    }

    /// The active key version, or nil if none is active; the highest version if several are.
    public func activeKeyVersion() throws(MetadataError) -> KeyVersionRecord? {
        try locked { (c) throws(MetadataError) in
            try c.withStatement("SELECT key_id, version, state, created_at FROM key_versions WHERE state = 'active' ORDER BY version DESC, key_id LIMIT 1") { (s) throws(MetadataError) in
                try s.step("reading the active key version") ? try Self.keyVersion(s, path: c.path) : nil
            }
        }
    }

    private static func keyVersion(_ s: Statement, path: String) throws(MetadataError) -> KeyVersionRecord {
        // The CHECK constraint makes this unreachable unless the file was edited by hand.
        guard let state = KeyVersionState(rawValue: s.text(2)) else {
            throw .corrupt("\(path): a key version has an unknown state")
        }
        return KeyVersionRecord(keyId: s.text(0), version: s.int(1), state: state, createdAt: s.text(3))
    }
}
