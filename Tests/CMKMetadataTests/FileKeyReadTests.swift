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
