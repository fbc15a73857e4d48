import CSQLite

/// One prepared statement, finalized when the last reference goes.
///
/// Not thread-safe and not Sendable: it is only reached through a `Connection`, which is only
/// reached under the store's lock.
final class Statement {
    private let handle: OpaquePointer
    // Borrowed: sqlite3_close_v2 keeps the connection alive (as a zombie) until every statement
    // is finalized, so this pointer outlives the statement even if the connection closes first.
    private let db: OpaquePointer
    private let path: String

    /// Prepares `sql`; `persistent` hints SQLite that the statement is cached and reused.
    init(db: OpaquePointer, path: String, sql: String, persistent: Bool) throws(MetadataError) {
        var handle: OpaquePointer?
        let flags: UInt32 = persistent ? UInt32(SQLITE_PREPARE_PERSISTENT) : 0
        let rc = sqlite3_prepare_v3(db, sql, -1, flags, &handle, nil)
        guard rc == SQLITE_OK, let handle else {
            sqlite3_finalize(handle)
            throw MetadataError.sqlite(rc, db: db, path: path, context: "preparing a statement")
        }
        self.handle = handle
        self.db = db
        self.path = path
    }

    deinit { sqlite3_finalize(handle) }

    // MARK: Binding (1-based indexes, as in SQLite)

    func bind(_ index: Int32, _ value: Int) throws(MetadataError) {
        try check(sqlite3_bind_int64(handle, index, sqlite3_int64(value)))
    }

    func bind(_ index: Int32, _ value: String) throws(MetadataError) {
        let count = value.utf8.count
        guard count <= Int(Int32.max) else { throw .misuse("\(path): a text value exceeds SQLite's size limit") }
        // withCString always yields a non-null pointer, so an empty string binds as '' not NULL.
        let rc = value.withCString { cmkfs_sqlite3_bind_text_transient(handle, index, $0, Int32(count)) }
        try check(rc)
    }

    func bind(_ index: Int32, _ value: [UInt8]) throws(MetadataError) {
        guard value.count <= Int(Int32.max) else { throw .misuse("\(path): a blob value exceeds SQLite's size limit") }
        // An empty array may have no base address, and a null pointer would bind NULL, which the
        // NOT NULL columns reject; an empty xattr value is legal, so bind a zero-length blob.
        let rc = value.isEmpty
            ? sqlite3_bind_zeroblob(handle, index, 0)
            : value.withUnsafeBytes { cmkfs_sqlite3_bind_blob_transient(handle, index, $0.baseAddress, Int32($0.count)) }
        try check(rc)
    }

    func bindNull(_ index: Int32) throws(MetadataError) {
        try check(sqlite3_bind_null(handle, index))
    }

    // MARK: Execution

    /// Advances one row: true when a row is ready to read, false when the statement is done.
    @discardableResult
    func step(_ context: String) throws(MetadataError) -> Bool {
        let rc = sqlite3_step(handle)
        switch rc {
        case SQLITE_ROW: return true
        case SQLITE_DONE: return false
        default: throw MetadataError.sqlite(rc, db: db, path: path, context: context)
        }
    }

    /// Rows changed by the last completed INSERT/UPDATE/DELETE on this connection.
    var changes: Int { Int(sqlite3_changes(db)) }

    /// Makes the statement reusable and drops its bindings.
    ///
    /// Cached statements must be reset after every use: a SELECT left mid-way holds a read
    /// transaction open, which pins the WAL and keeps checkpoints from completing.
    func reset() {
        sqlite3_reset(handle)
        sqlite3_clear_bindings(handle)
    }

    // MARK: Columns (0-based indexes, as in SQLite)

    func isNull(_ column: Int32) -> Bool { sqlite3_column_type(handle, column) == SQLITE_NULL }

    func int(_ column: Int32) -> Int { Int(sqlite3_column_int64(handle, column)) }

    func text(_ column: Int32) -> String {
        // column_text before column_bytes, so the byte count is of the UTF-8 conversion.
        guard let chars = sqlite3_column_text(handle, column) else { return "" }
        let count = Int(sqlite3_column_bytes(handle, column))
        return String(decoding: UnsafeBufferPointer(start: chars, count: count), as: UTF8.self)
    }

    func blob(_ column: Int32) -> [UInt8] {
        // column_blob returns NULL for a zero-length blob, which is simply [].
        guard let bytes = sqlite3_column_blob(handle, column) else { return [] }
        let count = Int(sqlite3_column_bytes(handle, column))
        return Array(UnsafeRawBufferPointer(start: bytes, count: count))
    }

    private func check(_ rc: Int32) throws(MetadataError) {
        guard rc == SQLITE_OK else { throw MetadataError.sqlite(rc, db: db, path: path, context: "binding a parameter") }
    }
}
