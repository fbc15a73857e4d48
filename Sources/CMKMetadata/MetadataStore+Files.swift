import CSQLite

/// Per-file rows: the wrapped data key and the user xattrs, keyed by the 16-byte file id.
extension MetadataStore {
    /// The size of a file id, in bytes.
    public static let fileIDSize = 16

    // Row names of the file key; everything under this prefix is internal (see Schema.swift).
    static let reservedPrefix = "cmkfs."
    static let edekName = "cmkfs.edek"
    static let kekName = "cmkfs.kek"

    /// Stores a new file's wrapped key (and, with `linkTag`, its first name binding); `.exists`
    /// if the file already has one.
    ///
    /// Writes the EDEK row and the key-id row in one transaction, so a reader sees both or neither.
    /// With `onlyIfActive`, writes nothing and returns false unless the record's key version is
    /// the active one in `key_versions` at commit: a rotation committed by another process since
    /// the caller picked its version is seen here, so no new file is ever wrapped under a
    /// version a rotation has already deactivated (and rotation's drain loop terminates).
    @discardableResult
    public func insertFileKey(fileID: [UInt8], _ record: FileKeyRecord, onlyIfActive: Bool = false,
                              linkTag: [UInt8]? = nil) throws(MetadataError) -> Bool {
        try Self.checkFileId(fileID)
        return try locked(growing: true) { (c) throws(MetadataError) -> Bool in
            try c.transaction("storing a file key") { () throws(MetadataError) -> Bool in
                if onlyIfActive {
                    let active = try c.withStatement("SELECT 1 FROM key_versions WHERE key_id = ?1 AND version = ?2 AND state = 'active'") { (s) throws(MetadataError) in
                        try s.bind(1, record.keyId)
                        try s.bind(2, record.keyVersion)
                        return try s.step("checking the active key version")
                    }
                    guard active else { return false }
                }
                // The rows in one statement (one VDBE run per create, not three): a clash on the
                // key-id row (debris without an EDEK) or the binding row overwrites it, a clash on
                // the EDEK row changes nothing, so fewer changed rows than written means the file
                // already has a key: `.exists`, and the transaction rolls the others back.
                let rows = linkTag == nil ? 2 : 3
                let changed = try c.withStatement(linkTag == nil ? Self.insertFileKeySQL : Self.insertFileKeyAndLinkSQL) { (s) throws(MetadataError) in
                    try s.bind(1, fileID)
                    try s.bind(2, record.edek)
                    try s.bind(3, record.keyVersion)
                    try s.bind(4, Array(record.keyId.utf8))
                    if let linkTag { try s.bind(5, Self.linkRowName(linkTag)) }
                    try s.step("storing a file key")
                    return s.changes
                }
                if changed != rows { throw .exists }
                return true
            }
        }
    }

    /// The rows of a new file's key (and first name binding) in one INSERT; see `insertFileKey`.
    static let insertFileKeySQL = insertFileKeySQL(link: "")
    static let insertFileKeyAndLinkSQL = insertFileKeySQL(link: ", (?1, ?5, x'', NULL)")

    private static func insertFileKeySQL(link: String) -> String {
        "INSERT INTO file_attrs(file_id, name, value, key_version) VALUES(?1, '\(edekName)', ?2, ?3), (?1, '\(kekName)', ?4, NULL)\(link)"
            + " ON CONFLICT(file_id, name) DO UPDATE SET value = excluded.value, key_version = excluded.key_version WHERE name <> '\(edekName)'"
    }

    /// Reads a file's EDEK row and its key-id row with one descent of the primary key: the two
    /// names are neighbours in its order (no other name sorts between `cmkfs.edek` and
    /// `cmkfs.kek`: user xattrs may not start with `cmkfs.`, binding rows are `cmkfs.link.…`), so
    /// a range over them is one seek and a step. A subquery for the key-id row opened a second
    /// cursor and descended the b-tree again, per key-miss open (issue 20). Not `name IN (…)`:
    /// SQLite builds a temporary b-tree for the IN list on every run. Column 0 says which row it
    /// is (`readFileKey`).
    static let fileKeySQL = "SELECT (name = '\(edekName)') + 2 * (name = '\(kekName)'), value, key_version FROM file_attrs WHERE file_id = ?1 AND name BETWEEN '\(edekName)' AND '\(kekName)'"

    /// The file's wrapped key, or nil if the file has none.
    public func fileKey(fileID: [UInt8]) throws(MetadataError) -> FileKeyRecord? {
        try Self.checkFileId(fileID)
        return try locked { (c) throws(MetadataError) in
            try c.withStatement(Self.fileKeySQL) { (s) throws(MetadataError) -> FileKeyRecord? in
                try s.bind(1, fileID)
                return try Self.readFileKey(s, c, binding: false, "reading a file key")?.record
            }
        }
    }

    /// The record from a run of `fileKeySQL` or `fileKeyAndLinkSQL`, whose rows come in name
    /// order with their kind in column 0: 1 the EDEK row, 2 the key-id row, 3 (with `binding`)
    /// the binding row asked about, 0 any other. Steps no further than it needs: past the key-id
    /// row only for a binding. Nil when the file has no EDEK row; `.corrupt` when it has one
    /// without its key id or key version.
    static func readFileKey(_ s: Statement, _ c: Connection, binding: Bool,
                            _ context: String) throws(MetadataError) -> (record: FileKeyRecord, bound: Bool)? {
        var edek: [UInt8]?, version: Int?, keyID: [UInt8]?, bound = false
        rows: while try s.step(context) {
            switch s.int(0) {
            case 1:
                edek = s.blob(1)
                version = s.isNull(2) ? nil : s.int(2)
            case 2:
                keyID = s.blob(1)
                if !binding { break rows }
            case 3:
                bound = true
                break rows
            default:
                continue
            }
        }
        guard let edek else { return nil }
        guard let version, let keyID, let keyId = String(validating: keyID, as: UTF8.self) else {
            throw .corrupt("\(c.path): a file key row lacks its key id or key version")
        }
        return (FileKeyRecord(edek: edek, keyId: keyId, keyVersion: version), bound)
    }

    /// Removes every row of the file: its key and all its xattrs. Removing a file that has no
    /// rows is not an error, so an interrupted unlink can simply be retried.
    public func deleteFile(fileID: [UInt8]) throws(MetadataError) {
        try deleteFiles(fileIDs: [fileID])
    }

    /// Removes every row of each file in one transaction (a batch of unlinks).
    public func deleteFiles(fileIDs: [[UInt8]]) throws(MetadataError) {
        for id in fileIDs { try Self.checkFileId(id) }
        try locked { (c) throws(MetadataError) in
            try c.transaction("deleting the rows of unlinked files") { () throws(MetadataError) in
                for id in fileIDs {
                    try c.withStatement("DELETE FROM file_attrs WHERE file_id = ?1") { (s) throws(MetadataError) in
                        try s.bind(1, id)
                        try s.step("deleting a file's rows")
                    }
                }
            }
        }
        // Unlinks free space: take back the room a full disk made the database use, so a
        // long-running mount keeps it too (not only the next open).
        reserve.refillIfShort()
    }

    /// Sets a user xattr. `.create` fails with `.exists` if it is set, `.replace` with
    /// `.notFound` if it is not. Names under `cmkfs.` are reserved and refused.
    public func setXattr(fileID: [UInt8], name: String, value: [UInt8], mode: XattrSetMode) throws(MetadataError) {
        try Self.checkFileId(fileID)
        guard !Self.isReserved(name) else { throw .misuse("xattr names starting with \(Self.reservedPrefix) are reserved") }
        try locked(growing: true) { (c) throws(MetadataError) in
            let sql = switch mode {
            case .any: "INSERT INTO file_attrs(file_id, name, value, key_version) VALUES(?1, ?2, ?3, NULL) ON CONFLICT(file_id, name) DO UPDATE SET value = excluded.value"
            case .create: "INSERT INTO file_attrs(file_id, name, value, key_version) VALUES(?1, ?2, ?3, NULL)"
            case .replace: "UPDATE file_attrs SET value = ?3 WHERE file_id = ?1 AND name = ?2"
            }
            let changed = try c.withStatement(sql) { (s) throws(MetadataError) in
                try s.bind(1, fileID)
                try s.bind(2, name)
                try s.bind(3, value)
                try s.step("writing an xattr")
                return s.changes
            }
            if changed == 0 { throw .notFound }
        }
    }

    /// A user xattr's value, or nil if it is not set (always nil for reserved names).
    public func xattr(fileID: [UInt8], name: String) throws(MetadataError) -> [UInt8]? {
        try Self.checkFileId(fileID)
        guard !Self.isReserved(name) else { return nil }
        return try locked { (c) throws(MetadataError) in
            try c.withStatement("SELECT value FROM file_attrs WHERE file_id = ?1 AND name = ?2") { (s) throws(MetadataError) in
                try s.bind(1, fileID)
                try s.bind(2, name)
                return try s.step("reading an xattr") ? s.blob(0) : nil
            }
        }
    }

    /// The file's user xattr names, sorted by their UTF-8 bytes; internal rows are left out.
    public func xattrNames(fileID: [UInt8]) throws(MetadataError) -> [String] {
        try Self.checkFileId(fileID)
        return try locked { (c) throws(MetadataError) in
            // GLOB, not LIKE: LIKE is case-insensitive and would also hide a user's 'CMKFS.x'.
            try c.withStatement("SELECT name FROM file_attrs WHERE file_id = ?1 AND name NOT GLOB '\(Self.reservedPrefix)*' ORDER BY name") { (s) throws(MetadataError) in
                try s.bind(1, fileID)
                var names: [String] = []
                while try s.step("listing xattrs") {
                    // GLOB does not match a name stored as a BLOB (a damaged or hand-edited row):
                    // check the decoded name too, so an internal row is never listed.
                    let name = s.text(0)
                    if !Self.isReserved(name) { names.append(name) }
                }
                return names
            }
        }
    }

    /// Removes a user xattr; `.notFound` if it is not set (or the name is reserved).
    public func removeXattr(fileID: [UInt8], name: String) throws(MetadataError) {
        try Self.checkFileId(fileID)
        guard !Self.isReserved(name) else { throw .notFound }
        try locked { (c) throws(MetadataError) in
            let changed = try c.withStatement("DELETE FROM file_attrs WHERE file_id = ?1 AND name = ?2") { (s) throws(MetadataError) in
                try s.bind(1, fileID)
                try s.bind(2, name)
                try s.step("removing an xattr")
                return s.changes
            }
            if changed == 0 { throw .notFound }
        }
    }

    /// The number of files that have a key row.
    public func fileCount() throws(MetadataError) -> Int {
        try locked { (c) throws(MetadataError) in
            // The key_version term lets SQLite answer from the partial index instead of the table.
            try c.withStatement("SELECT count(*) FROM file_attrs WHERE key_version IS NOT NULL AND name = '\(Self.edekName)'") { (s) throws(MetadataError) in
                try s.step("counting files") ? s.int(0) : 0
            }
        }
    }

    /// How many EDEKs each master-key version wraps (versions with none are absent).
    public func edekCounts() throws(MetadataError) -> [Int: Int] {
        try locked { (c) throws(MetadataError) in
            try c.withStatement("SELECT key_version, count(*) FROM file_attrs WHERE key_version IS NOT NULL AND name = '\(Self.edekName)' GROUP BY key_version") { (s) throws(MetadataError) in
                var counts: [Int: Int] = [:]
                while try s.step("counting EDEKs per key version") { counts[s.int(0)] = s.int(1) }
                return counts
            }
        }
    }

    /// The VDBE opcodes of `sql` on this store's connection (tests of a statement's cost).
    func opcodes(of sql: String) throws(MetadataError) -> [String] {
        try locked { (c) throws(MetadataError) in try c.opcodes(sql) }
    }

    private static func isReserved(_ name: String) -> Bool { name.hasPrefix(reservedPrefix) }

    static func checkFileId(_ fileID: [UInt8]) throws(MetadataError) {
        // Caught here rather than by the CHECK constraint so reads of a bad id fail too, not return nil.
        guard fileID.count == fileIDSize else {
            throw .misuse("a file id must be \(fileIDSize) bytes, got \(fileID.count)")
        }
    }
}
