import XCTest
@testable import CMKMetadata

/// The EDEK read every key-miss open makes (issue 20): one cheap statement, same answers.
final class FileKeyReadTests: MetadataTestCase {
    /// `name IN ('cmkfs.edek', 'cmkfs.kek')` made SQLite fill a temporary b-tree with the IN
    /// list on every run (OpenEphemeral + IdxInsert per key-miss open); the read is now two
    /// primary-key lookups in one statement.
    func testFileKeyReadBuildsNoTemporaryTable() throws {
        let store = try makeStore()
        let ops = try store.opcodes(of: MetadataStore.fileKeySQL)
        XCTAssertFalse(ops.contains("OpenEphemeral"), "the EDEK read builds a temporary table per run: \(ops)")
        XCTAssertFalse(ops.contains("IdxInsert"), "the EDEK read inserts into a temporary index per run: \(ops)")
    }

    /// The EDEK and key-id rows are neighbours in the primary key's order, so the read opens
    /// one cursor and seeks once, with the binding row too; a subquery per row opened a cursor
    /// and descended the b-tree again for each (two descents per key-miss open, three with the
    /// binding).
    func testFileKeyReadDescendsTheTableOnce() throws {
        let store = try makeStore()
        for sql in [MetadataStore.fileKeySQL, MetadataStore.fileKeyAndLinkSQL] {
            let ops = try store.opcodes(of: sql)
            XCTAssertEqual(ops.filter { $0 == "OpenRead" }.count, 1, "cursors opened per run of \(sql): \(ops)")
            XCTAssertEqual(ops.filter { $0.hasPrefix("Seek") }.count, 1, "b-tree descents per run of \(sql): \(ops)")
        }
    }

    /// The range read tells its rows apart by name: the binding asked about among a hard-linked
    /// file's several, a key-id or binding row left without an EDEK row (no key), and an EDEK
    /// row without its key-id row (corrupt), with or without the binding read.
    func testFileKeyRangeReadAnswersLikeSeparateLookups() throws {
        let store = try makeStore()
        let tags = (1...3).map { [UInt8](repeating: UInt8($0), count: 16) }
        let stray = [UInt8](repeating: 9, count: 16)
        try store.insertFileKey(fileID: fileID(1), key(0x11, keyId: "mk-one", version: 2), linkTag: tags[0])
        try store.changeLinks(add: [(fileID(1), tags[1]), (fileID(1), tags[2])])
        for tag in tags {
            let read = try store.fileKey(fileID: fileID(1), boundBy: tag)
            XCTAssertEqual(read?.record, key(0x11, keyId: "mk-one", version: 2))
            XCTAssertEqual(read?.bound, true)
        }
        XCTAssertEqual(try store.fileKey(fileID: fileID(1), boundBy: stray)?.bound, false)
        XCTAssertEqual(try store.fileKey(fileID: fileID(1)), key(0x11, keyId: "mk-one", version: 2))

        try store.insertFileKey(fileID: fileID(2), key(0x22), linkTag: tags[0])
        try store.insertFileKey(fileID: fileID(3), key(0x33), linkTag: tags[0])
        func hex(_ id: [UInt8]) -> String { id.map { String($0, radix: 16).count == 1 ? "0" + String($0, radix: 16) : String($0, radix: 16) }.joined() }
        try store.locked { (c) throws(MetadataError) in
            _ = try c.execute("DELETE FROM file_attrs WHERE file_id = x'\(hex(fileID(2)))' AND name = 'cmkfs.edek'", "test")
            _ = try c.execute("DELETE FROM file_attrs WHERE file_id = x'\(hex(fileID(3)))' AND name = 'cmkfs.kek'", "test")
        }
        XCTAssertNil(try store.fileKey(fileID: fileID(2)), "a key-id row without an EDEK row is no key")
        XCTAssertNil(try store.fileKey(fileID: fileID(2), boundBy: tags[0]), "a binding without an EDEK row is no key")
        guard case .corrupt? = expectError({ try store.fileKey(fileID: fileID(3)) }) else { return XCTFail("expected .corrupt") }
        guard case .corrupt? = expectError({ try store.fileKey(fileID: fileID(3), boundBy: tags[0]) }) else { return XCTFail("expected .corrupt") }
    }

    /// A create stores its EDEK, key-id and binding rows with one statement, not one each: the
    /// active-version check and that insert are all it prepares besides transaction control.
    func testStoringAFileKeyRunsOneInsert() throws {
        let store = try makeStore()
        try store.addKeyVersion(KeyVersionRecord(keyId: "mk-one", version: 1, state: .active, createdAt: "2026-01-01T00:00:00Z"))
        try store.deleteFiles(fileIDs: [])   // caches BEGIN IMMEDIATE and COMMIT
        let before = try store.locked { $0.cachedStatements }
        XCTAssertTrue(try store.insertFileKey(fileID: fileID(1), key(0x11, keyId: "mk-one", version: 1), onlyIfActive: true,
                                              linkTag: [UInt8](repeating: 7, count: 16)))
        // The active-version SELECT and the INSERT (before: one INSERT per row, three).
        XCTAssertEqual(try store.locked { $0.cachedStatements } - before, 2)
    }

    /// The one-statement insert keeps the three statements' answers: a key-id row left without
    /// its EDEK is overwritten, an existing binding row is kept, and a file that has a key is
    /// `.exists` with nothing of the second attempt written.
    func testStoringAFileKeyOverDebrisAndOverAnExistingKey() throws {
        let store = try makeStore()
        let tag = [UInt8](repeating: 7, count: 16), other = [UInt8](repeating: 9, count: 16)
        let hex = fileID(1).map { String($0, radix: 16).count == 1 ? "0" + String($0, radix: 16) : String($0, radix: 16) }.joined()
        try store.locked { (c) throws(MetadataError) in
            _ = try c.execute("INSERT INTO file_attrs VALUES(x'\(hex)', 'cmkfs.kek', x'6465627269', NULL)", "test")
        }
        try store.insertFileKey(fileID: fileID(1), key(0x11, keyId: "mk-one", version: 3), onlyIfActive: false, linkTag: tag)
        XCTAssertEqual(try store.fileKey(fileID: fileID(1)), key(0x11, keyId: "mk-one", version: 3))
        XCTAssertEqual(try store.fileKey(fileID: fileID(1), boundBy: tag)?.bound, true)
        XCTAssertEqual(expectError { try store.insertFileKey(fileID: fileID(1), key(0x22, keyId: "mk-two", version: 5),
                                                              onlyIfActive: false, linkTag: other) }, .exists)
        XCTAssertEqual(try store.fileKey(fileID: fileID(1)), key(0x11, keyId: "mk-one", version: 3))
        XCTAssertEqual(try store.fileKey(fileID: fileID(1), boundBy: other)?.bound, false, "the refused insert's binding was rolled back")
        XCTAssertEqual(try store.fileCount(), 1)
    }

    func testFileKeyReadsTheRecordAndOnlyItsOwnRows() throws {
        let store = try makeStore()
        try store.insertFileKey(fileID: fileID(1), key(0x11, keyId: "mk-one", version: 3))
        try store.insertFileKey(fileID: fileID(2), key(0x22, keyId: "mk-two", version: 1), onlyIfActive: false,
                                linkTag: [UInt8](repeating: 7, count: 16))
        try store.setXattr(fileID: fileID(2), name: "user.a", value: [1, 2], mode: .any)
        XCTAssertEqual(try store.fileKey(fileID: fileID(1)), key(0x11, keyId: "mk-one", version: 3))
        XCTAssertEqual(try store.fileKey(fileID: fileID(2)), key(0x22, keyId: "mk-two", version: 1))
        XCTAssertNil(try store.fileKey(fileID: fileID(3)))
    }

    func testAnEDEKRowWithoutItsKeyIDRowIsCorrupt() throws {
        let store = try makeStore()
        try store.insertFileKey(fileID: fileID(1), key(0x11))
        try store.locked { (c) throws(MetadataError) in
            _ = try c.execute("DELETE FROM file_attrs WHERE name = 'cmkfs.kek'", "test")
        }
        guard case .corrupt? = expectError({ try store.fileKey(fileID: fileID(1)) }) else { return XCTFail("expected .corrupt") }
    }
}
