// The cmkfs metadata database, schema version 2.
//
// A SQLite 3 database file. Identification, in the SQLite header:
//   PRAGMA application_id = 0x434D4B46   ('CMKF')
//   PRAGMA user_version   = 2            (the schema version)
// Settings on every connection:
//   PRAGMA journal_mode = WAL            (persistent; the file has -wal and -shm companions)
//   PRAGMA synchronous  = NORMAL         (a commit survives a process crash; a power cut only
//                                         once the WAL is synced, see MetadataStore.makeDurable)
//   PRAGMA foreign_keys = ON
//   busy_timeout 5000 ms
//
// Tables:
//
//   meta(key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID
//     Volume-level facts (volume id, key-check record, ...), one row per key.
//
//   key_versions(key_id TEXT NOT NULL, version INTEGER NOT NULL,
//                state TEXT NOT NULL CHECK(state IN ('active','deactivated','disabled','purged')),
//                created_at TEXT NOT NULL,
//                PRIMARY KEY(key_id, version)) WITHOUT ROWID
//     The master-key versions known to the volume; created_at is ISO-8601 UTC.
//
//   file_attrs(file_id BLOB NOT NULL CHECK(length(file_id)=16), name TEXT NOT NULL,
//              value BLOB NOT NULL, key_version INTEGER,
//              PRIMARY KEY(file_id, name)) WITHOUT ROWID
//     Xattr-style rows per file, keyed by the file's 16-byte random id:
//       name 'cmkfs.edek'  value = the EDEK (the file's data key wrapped by a master key),
//                          key_version = the master-key version that wrapped it.
//       name 'cmkfs.kek'   value = the key id of that master key, UTF-8; key_version NULL.
//                          Written in the same transaction as 'cmkfs.edek'; both or neither.
//       name 'cmkfs.link.<32 hex>'  one per directory entry of the file (encrypted-name
//                          volumes): the entry's binding tag, value empty, key_version NULL
//                          (docs/on-disk-format.md, "Name bindings"). No schema change: these
//                          are file_attrs rows under the reserved prefix.
//       name 'user.*'      a user extended attribute; value already encrypted by the caller;
//                          key_version NULL.
//     Names starting with 'cmkfs.' are reserved for the rows above.
//
//   CREATE INDEX file_attrs_by_version ON file_attrs(key_version) WHERE key_version IS NOT NULL
//     Finds the EDEKs of one master-key version (rotation, purge) without a table scan.
//
//   long_names(hash BLOB PRIMARY KEY CHECK(length(hash)=32), name TEXT NOT NULL) WITHOUT ROWID
//     (schema 2) The full encoding of each encrypted file name too long to be a backing name
//     (docs/on-disk-format.md): hash = SHA-256 of `name`, which is the backing entry
//     `L.<base64url(hash)>`. Content-addressed, so rows are written ahead of the entry and
//     written again idempotently; a row whose entry is gone is an orphan (harmless).
//
// Migrations are append-only: `Schema.migrations[v]` upgrades a version-v database to v+1 and is
// never edited once released; a new schema version appends one entry.

import CSQLite

/// Creation, verification and migration of the schema described at the top of this file.
enum Schema {
    /// 'CMKF' in the SQLite header, so a stray database is never mistaken for a volume's.
    static let applicationID: Int = 0x434D4B46

    /// Statements per migration step; entry v takes a database from user_version v to v+1.
    /// Entry 0 builds the schema from an empty file, so creation and upgrade share one path.
    static let migrations: [[String]] = [
        [
            "PRAGMA application_id = \(applicationID)",
            "CREATE TABLE meta(key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID",
            """
            CREATE TABLE key_versions(key_id TEXT NOT NULL, version INTEGER NOT NULL, \
            state TEXT NOT NULL CHECK(state IN ('active','deactivated','disabled','purged')), \
            created_at TEXT NOT NULL, PRIMARY KEY(key_id, version)) WITHOUT ROWID
            """,
            """
            CREATE TABLE file_attrs(file_id BLOB NOT NULL CHECK(length(file_id)=16), \
            name TEXT NOT NULL, value BLOB NOT NULL, key_version INTEGER, \
            PRIMARY KEY(file_id, name)) WITHOUT ROWID
            """,
            "CREATE INDEX file_attrs_by_version ON file_attrs(key_version) WHERE key_version IS NOT NULL",
        ],
        // 1 → 2: encrypted file names longer than a backing name may be.
        [
            "CREATE TABLE long_names(hash BLOB PRIMARY KEY CHECK(length(hash)=32), name TEXT NOT NULL) WITHOUT ROWID",
        ],
    ]

    /// The schema version this build writes: one past the last migration.
    static var version: Int { migrations.count }

    /// The tables every supported version has; their absence means the file is not ours.
    private static let requiredTables = ["meta", "key_versions", "file_attrs"]

    /// Builds the current schema in a freshly created, empty database file.
    static func create(_ connection: Connection) throws(MetadataError) {
        try configure(connection)
        try migrate(connection)
        try verifyTables(connection)
    }

    /// Checks that an existing file is a cmkfs database of a supported version, then upgrades it.
    ///
    /// The identity checks come before anything that writes, so a foreign file is left untouched.
    static func openExisting(_ connection: Connection) throws(MetadataError) {
        let path = connection.path
        let appID = try connection.pragmaInt("application_id")
        guard appID == applicationID else {
            throw .corrupt("\(path) is not a cmkfs metadata database (application id \(hex(appID)), expected \(hex(applicationID)))")
        }
        let found = try connection.pragmaInt("user_version")
        guard found > 0 else { throw .corrupt("\(path) has the cmkfs application id but no schema") }
        guard found <= version else { throw .newerSchema(found: found, supported: version) }
        try configure(connection)
        if found < version { try migrate(connection) }
        try verifyTables(connection)
    }

    /// Per-connection settings (and WAL, which is persistent but cheap to re-assert).
    private static func configure(_ connection: Connection) throws(MetadataError) {
        let mode = try connection.execute("PRAGMA journal_mode = WAL", "enabling WAL")
        // SQLite answers with the mode it ended up in; some filesystems cannot do WAL, and the
        // durability argument of makeDurable does not hold without it.
        guard mode?.lowercased() == "wal" else {
            throw .io(code: SQLITE_CANTOPEN, message: "\(connection.path): the filesystem does not support WAL journaling")
        }
        try connection.execute("PRAGMA synchronous = NORMAL", "setting synchronous")
        try connection.execute("PRAGMA foreign_keys = ON", "enabling foreign keys")
    }

    /// Applies the migrations the file lacks, in one transaction, and records the new user_version.
    private static func migrate(_ connection: Connection) throws(MetadataError) {
        try connection.transaction("upgrading the schema") { () throws(MetadataError) in
            // Re-read under the write lock: another process may have upgraded since we looked.
            let current = try connection.pragmaInt("user_version")
            guard current >= 0 else { throw .corrupt("\(connection.path) has a negative schema version") }
            guard current <= version else { throw .newerSchema(found: current, supported: version) }
            for step in migrations[current...] {
                for sql in step { try connection.execute(sql, "upgrading the schema") }
            }
            try connection.execute("PRAGMA user_version = \(version)", "recording the schema version")
        }
    }

    private static func verifyTables(_ connection: Connection) throws(MetadataError) {
        let names = requiredTables.map { "'\($0)'" }.joined(separator: ", ")
        let sql = "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name IN (\(names))"
        let count = try connection.execute(sql, "checking the schema").flatMap { Int($0) }
        guard count == requiredTables.count else {
            throw .corrupt("\(connection.path) is missing cmkfs tables (schema version \(version))")
        }
    }

    private static func hex(_ value: Int) -> String { "0x" + String(UInt32(truncatingIfNeeded: value), radix: 16, uppercase: true) }
}
