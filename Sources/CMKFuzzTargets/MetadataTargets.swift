import Glibc
import CSQLite
import CMKMetadata
import CMKSystem

// The metadata database: a meta.db whose bytes are fuzzed, and rows of fuzzed values inserted
// behind the store's back (with CHECK constraints off, as a hand edit could).

private let databasePath = scratchDirectory + "/meta.db"

private func removeDatabase(_ path: String) {
    for suffix in ["", "-wal", "-shm", "-journal"] { try? Descriptor.cwd.unlink(path + suffix) }
}

/// The bytes of a fresh, checkpointed database made by `MetadataStore.create`, with `fill` run on it.
func databaseBytes(_ fill: (MetadataStore) throws(MetadataError) -> Void) -> [UInt8] {
    let path = scratchDirectory + "/seed.db"
    removeDatabase(path)
    defer { removeDatabase(path) }
    do {
        let store = try MetadataStore.create(at: path)
        try fill(store)
        try store.makeDurable()
        store.close()
    } catch {
        fatalError("fuzz harness: cannot make a seed database: \(error)")
    }
    return readFile(path)
}

/// A new database, made once per process; the rows target copies it before each input.
private let emptyDatabase: [UInt8] = databaseBytes { _ throws(MetadataError) in }

/// Opens `meta.db` holding `data` and calls every reader of the store. Anything may fail, but
/// only with a `MetadataError` (the typed throws make that static); a crash or a hang is a bug.
public func fuzzMetadataDatabase(_ data: [UInt8]) throws(FuzzViolation) {
    removeDatabase(databasePath)
    writeFile(databasePath, data)
    defer { removeDatabase(databasePath) }
    guard let store = try? MetadataStore.open(at: databasePath) else { return }
    defer { store.close() }
    try readEverything(store, target: "metadata-db")
}

/// Rows of fuzzed values in `key_versions`, `file_attrs`, `meta` and `long_names` of a real database, then
/// every reader. The input is a list of rows: a table byte, then one tagged value per column
/// (null, integer, real, text or blob; file ids mostly from a set of four so rows meet).
public func fuzzMetadataRows(_ data: [UInt8]) throws(FuzzViolation) {
    removeDatabase(databasePath)
    writeFile(databasePath, emptyDatabase)
    defer { removeDatabase(databasePath) }
    insertRows(data, into: databasePath)
    guard let store = try? MetadataStore.open(at: databasePath) else { return }
    defer { store.close() }
    try readEverything(store, target: "metadata-rows")
}

private let fileIDs: [[UInt8]] = (0..<4).map { i in [UInt8](repeating: UInt8(0x10 * (i + 1)), count: 16) }
/// Keys of `long_names` rows (SHA-256 sized).
private let longHashes: [[UInt8]] = (0..<4).map { i in [UInt8](repeating: UInt8(0x11 * (i + 1)), count: 32) }
private let attrNames = ["cmkfs.edek", "cmkfs.kek", "user.a", "cmkfs.other"]

private func insertRows(_ data: [UInt8], into path: String) {
    var db: OpaquePointer?
    guard sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, nil) == SQLITE_OK, let db else {
        fatalError("fuzz harness: cannot open the template database")
    }
    defer { sqlite3_close_v2(db) }
    // What a hand edit with the sqlite3 shell can do: no CHECK constraints, no fsync.
    sqlite3_exec(db, "PRAGMA ignore_check_constraints = ON; PRAGMA synchronous = OFF; BEGIN", nil, nil, nil)
    var r = ByteReader(data)
    var rows = 0
    while !r.atEnd && rows < 64 {
        rows += 1
        let table = r.u8() % 4
        let sql: String
        switch table {
        case 0: sql = "INSERT OR REPLACE INTO key_versions(key_id, version, state, created_at) VALUES(?1, ?2, ?3, ?4)"
        case 1: sql = "INSERT OR REPLACE INTO file_attrs(file_id, name, value, key_version) VALUES(?1, ?2, ?3, ?4)"
        case 2: sql = "INSERT OR REPLACE INTO meta(key, value) VALUES(?1, ?2)"
        default: sql = "INSERT OR REPLACE INTO long_names(hash, name) VALUES(?1, ?2)"
        }
        var statement: OpaquePointer?
        guard sqlite3_prepare_v2(db, sql, -1, &statement, nil) == SQLITE_OK, let statement else { continue }
        defer { sqlite3_finalize(statement) }
        let columns: Int32 = table >= 2 ? 2 : 4
        for column in 1...columns {
            bindValue(statement, column, &r, table: table)
        }
        _ = sqlite3_step(statement)
    }
    sqlite3_exec(db, "COMMIT", nil, nil, nil)
}

/// One tagged value. Tags 5–7 are shortcuts to values that meet the schema's expectations
/// (a known file id or long-name hash, a reserved row name, a valid state), so rows reach the
/// store's parsing.
private func bindValue(_ s: OpaquePointer, _ column: Int32, _ r: inout ByteReader, table: UInt8) {
    let tag = r.u8() % 8
    switch tag {
    case 0: sqlite3_bind_null(s, column)
    case 1: sqlite3_bind_int64(s, column, sqlite3_int64(bitPattern: r.u64()))
    case 2: sqlite3_bind_double(s, column, Double(bitPattern: r.u64()))
    case 3:
        // Any bytes, valid UTF-8 or not: SQLite stores text as given.
        let text = r.shortBytes()
        if text.isEmpty { _ = cmkfs_sqlite3_bind_text_transient(s, column, "", 0) } else {
            _ = text.withUnsafeBytes { p in
                cmkfs_sqlite3_bind_text_transient(s, column, p.baseAddress!.assumingMemoryBound(to: CChar.self), Int32(text.count))
            }
        }
    case 4:
        let blob = r.shortBytes()
        if blob.isEmpty { sqlite3_bind_zeroblob(s, column, 0) } else {
            _ = blob.withUnsafeBytes { cmkfs_sqlite3_bind_blob_transient(s, column, $0.baseAddress, Int32($0.count)) }
        }
    case 5:
        let id = table == 3 ? longHashes[Int(r.u8()) % longHashes.count] : fileIDs[Int(r.u8()) % fileIDs.count]
        _ = id.withUnsafeBytes { cmkfs_sqlite3_bind_blob_transient(s, column, $0.baseAddress, Int32($0.count)) }
    case 6:
        let name = table == 0 ? ["active", "deactivated", "disabled", "purged"][Int(r.u8()) % 4] : attrNames[Int(r.u8()) % attrNames.count]
        _ = cmkfs_sqlite3_bind_text_transient(s, column, name, Int32(name.utf8.count))
    default: sqlite3_bind_int64(s, column, sqlite3_int64(r.u8()))
    }
}

/// Calls every read of the store, following the ids and versions the database names.
private func readEverything(_ store: MetadataStore, target: String) throws(FuzzViolation) {
    for key in ["volume_id", "key_check", "key_check_version", "audit_key", "audit_key_version", "audit_checkpoint", "rotation"] {
        _ = try? store.meta(key)
    }
    _ = try? store.metaKeys(withPrefix: "rekey.")
    for hash in longHashes { _ = try? store.longName(hash: hash) }
    let versions = (try? store.keyVersions()) ?? []
    if let active = try? store.activeKeyVersion() {
        guard active.state == .active else { throw FuzzViolation(target, "activeKeyVersion returned a \(active.state) version") }
    }
    _ = try? store.fileCount()
    let counts = (try? store.edekCounts()) ?? [:]
    var ids = Set(fileIDs)
    for version in Set(versions.map(\.version)).union(counts.keys).sorted().prefix(16) {
        for id in (try? store.fileIDs(version: version)) ?? [] { ids.insert(id) }
        var after: [UInt8]? = nil
        for _ in 0..<4 {
            guard let batch = try? store.wrappedKeys(version: version, after: after, limit: 2), let last = batch.last else { break }
            after = last.fileID
        }
    }
    for id in ids.sorted(by: { $0.lexicographicallyPrecedes($1) }).prefix(32) {
        _ = try? store.fileKey(fileID: id)
        for name in (try? store.xattrNames(fileID: id)) ?? [] {
            guard !name.hasPrefix("cmkfs.") else { throw FuzzViolation(target, "xattrNames listed the reserved row \(name)") }
            _ = try? store.xattr(fileID: id, name: name)
        }
    }
}

func metadataDatabaseSeeds() -> [(name: String, bytes: [UInt8])] {
    [("empty", emptyDatabase),
     ("volume", databaseBytes { store throws(MetadataError) in
         try store.setMeta("volume_id", [UInt8](repeating: 7, count: 16))
         try store.addKeyVersion(KeyVersionRecord(keyId: "mk-0123456789abcdef", version: 1, state: .deactivated, createdAt: "2026-11-24T00:00:00Z"))
         try store.addKeyVersion(KeyVersionRecord(keyId: "mk-0123456789abcdef", version: 2, state: .active, createdAt: "2026-11-24T00:00:01Z"))
         for (i, id) in fileIDs.enumerated() {
             try store.insertFileKey(fileID: id, FileKeyRecord(edek: [UInt8](repeating: UInt8(i), count: 60), keyId: "mk-0123456789abcdef", keyVersion: 1 + i % 2))
             try store.setXattr(fileID: id, name: "user.note", value: [1, 2, 3], mode: .any)
         }
         try store.setLongName(hash: longHashes[0], name: String(repeating: "A", count: 200))
     })]
}

func metadataRowSeeds() -> [(name: String, bytes: [UInt8])] {
    // key_versions row: key id text, version 1, state active, created_at text; then a file's
    // EDEK and key-id rows, and a user xattr.
    let keyID = Array("mk-0123456789abcdef".utf8)
    var row: [UInt8] = [0, 3, UInt8(keyID.count)] + keyID + [7, 1, 6, 0, 3, 4] + Array("2026".utf8)
    row += [1, 5, 0, 6, 0, 4, 60] + [UInt8](repeating: 9, count: 60) + [7, 1]
    row += [1, 5, 0, 6, 1, 4, UInt8(keyID.count)] + keyID + [0]
    row += [1, 5, 0, 6, 2, 4, 3, 1, 2, 3, 0]
    return [("file-with-key", row),
            ("bad-state", [0, 3, 1, 0x6B, 7, 1, 3, 3] + Array("odd".utf8) + [3, 0]),
            ("edek-without-version", [1, 5, 1, 6, 0, 4, 2, 1, 2, 0]),
            ("long-name", [3, 5, 0, 3, 43] + Array("AbCdEfGhIjKlMnOpQrStUvWxYz0123456789-_abcde".utf8))]
}
