import Foundation
import XCTest
@testable import CMKMetadata

final class OpenCreateTests: MetadataTestCase {
    func testSchemaVersionMatchesMigrationList() {
        XCTAssertEqual(MetadataStore.schemaVersion, 2)
        XCTAssertEqual(Schema.migrations.count, MetadataStore.schemaVersion)
    }

    func testCreateOpenRoundTrip() throws {
        let dbPath = path("meta.db")
        do {
            let store = try MetadataStore.create(at: dbPath)
            try store.setMeta("volume-id", [1, 2, 3])
            try store.addKeyVersion(KeyVersionRecord(keyId: "k", version: 1, state: .active, createdAt: "2025-01-01T00:00:00Z"))
            try store.insertFileKey(fileID: fileID(1), key(7))
            try store.setXattr(fileID: fileID(1), name: "user.tag", value: [9, 9], mode: .create)
            store.close()
        }
        let reopened = try MetadataStore.open(at: dbPath)
        XCTAssertEqual(try reopened.meta("volume-id"), [1, 2, 3])
        XCTAssertNil(try reopened.meta("absent"))
        XCTAssertEqual(try reopened.keyVersions(),
                       [KeyVersionRecord(keyId: "k", version: 1, state: .active, createdAt: "2025-01-01T00:00:00Z")])
        XCTAssertEqual(try reopened.fileKey(fileID: fileID(1)), key(7))
        XCTAssertEqual(try reopened.xattr(fileID: fileID(1), name: "user.tag"), [9, 9])
        XCTAssertEqual(try reopened.fileCount(), 1)
    }

    func testCreatedFileIsPrivate() throws {
        let dbPath = path("meta.db")
        let store = try MetadataStore.create(at: dbPath)
        try store.setMeta("volume-id", [1])
        // The WAL holds recent rows too, so it must be as private as the database.
        for file in [dbPath, dbPath + "-wal"] {
            let attributes = try FileManager.default.attributesOfItem(atPath: file)
            XCTAssertEqual((attributes[.posixPermissions] as? NSNumber)?.intValue, 0o600, file)
        }
    }

    func testCreateRefusesExistingFile() throws {
        let dbPath = path("meta.db")
        _ = try MetadataStore.create(at: dbPath)
        XCTAssertEqual(expectError { try MetadataStore.create(at: dbPath) }, .exists)
        // The existing database must be untouched by the refused create.
        XCTAssertNoThrow(try MetadataStore.open(at: dbPath))
    }

    func testOpenMissingPathIsNotFound() {
        XCTAssertEqual(expectError { try MetadataStore.open(at: path("nope.db")) }, .notFound)
        XCTAssertFalse(FileManager.default.fileExists(atPath: path("nope.db")), "open must not create the file")
    }

    func testOpenGarbageFileIsCorruptAndUntouched() throws {
        let dbPath = path("garbage.db")
        let garbage = Data(repeating: 0x78, count: 4096)
        try garbage.write(to: URL(fileURLWithPath: dbPath))
        let error = expectError { try MetadataStore.open(at: dbPath) }
        guard case .corrupt(let message)? = error else { return XCTFail("expected .corrupt, got \(String(describing: error))") }
        XCTAssertTrue(message.contains(dbPath), "message should name the path: \(message)")
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: dbPath)), garbage)
    }

    func testOpenForeignApplicationIdIsCorrupt() throws {
        // Our full schema under someone else's id: only the application id check can catch it.
        let dbPath = path("other.db")
        try makeStore("other.db").close()
        do {
            let connection = try Connection(path: dbPath)
            try connection.execute("PRAGMA application_id = 1234", "test")
        }
        let error = expectError { try MetadataStore.open(at: dbPath) }
        guard case .corrupt(let message)? = error else { return XCTFail("expected .corrupt, got \(String(describing: error))") }
        XCTAssertTrue(message.contains(dbPath), "message should name the path: \(message)")
    }

    func testOpenPlainSQLiteDatabaseIsCorrupt() throws {
        let dbPath = path("plain.db")
        XCTAssertTrue(FileManager.default.createFile(atPath: dbPath, contents: nil))
        do {
            let connection = try Connection(path: dbPath)
            try connection.execute("CREATE TABLE t(x)", "test")
        }
        guard case .corrupt? = expectError({ try MetadataStore.open(at: dbPath) }) else {
            return XCTFail("expected .corrupt")
        }
    }

    func testOpenNewerSchemaIsRefused() throws {
        let dbPath = path("meta.db")
        try makeStore().close()
        do {
            let connection = try Connection(path: dbPath)
            try connection.execute("PRAGMA user_version = 99", "test")
        }
        XCTAssertEqual(expectError { try MetadataStore.open(at: dbPath) },
                       .newerSchema(found: 99, supported: MetadataStore.schemaVersion))
    }

    func testOpenWithoutSchemaVersionIsCorrupt() throws {
        let dbPath = path("meta.db")
        try makeStore().close()
        do {
            let connection = try Connection(path: dbPath)
            try connection.execute("PRAGMA user_version = 0", "test")
        }
        guard case .corrupt? = expectError({ try MetadataStore.open(at: dbPath) }) else {
            return XCTFail("expected .corrupt")
        }
    }

    func testCloseIsIdempotentAndLaterCallsFail() throws {
        let store = try makeStore()
        store.close()
        store.close()
        guard case .io? = expectError({ try store.fileCount() }) else { return XCTFail("expected .io on a closed store") }
    }

    func testDataSurvivesManyReopens() throws {
        let dbPath = path("meta.db")
        try makeStore().close()
        for round in 0..<5 {
            let store = try MetadataStore.open(at: dbPath)
            XCTAssertEqual(try store.fileCount(), round)
            try store.insertFileKey(fileID: fileID(round), key(UInt8(round)))
            store.close()
        }
        let store = try MetadataStore.open(at: dbPath)
        for round in 0..<5 {
            XCTAssertEqual(try store.fileKey(fileID: fileID(round)), key(UInt8(round)))
        }
    }

    /// makeDurable syncs the WAL and copies nothing into the main file: the copy (a FULL
    /// checkpoint, two syncs) used to run under the store's lock every 100 ms for the audit
    /// checkpoint, holding up every create meanwhile. `checkpoint()` still does the copy.
    func testMakeDurableSyncsTheLogAndCheckpointCopiesIntoTheMainFile() throws {
        let dbPath = path("meta.db")
        let store = try MetadataStore.create(at: dbPath)
        try store.makeDurable()
        XCTAssertFalse(store.hasUnsyncedWrites)
        try store.insertFileKey(fileID: fileID(42), key(1))
        XCTAssertTrue(store.hasUnsyncedWrites)
        try store.makeDurable()
        XCTAssertFalse(store.hasUnsyncedWrites)
        try store.makeDurable()  // nothing written since: must be a cheap no-op, not an error

        func mainFileAlone(_ name: String) throws -> FileKeyRecord? {
            let copy = path(name)
            try FileManager.default.copyItem(atPath: dbPath, toPath: copy)
            XCTAssertFalse(FileManager.default.fileExists(atPath: copy + "-wal"))
            let copied = try MetadataStore.open(at: copy)
            defer { copied.close() }
            return try copied.fileKey(fileID: fileID(42))
        }
        XCTAssertNil(try mainFileAlone("synced.db"), "makeDurable left the row in the synced WAL, not copied")
        try store.checkpoint()
        XCTAssertEqual(try mainFileAlone("checkpointed.db"), key(1), "after a checkpoint the main file alone holds the row")
    }
}
