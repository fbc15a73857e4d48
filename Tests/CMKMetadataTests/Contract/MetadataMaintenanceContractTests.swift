import XCTest
import CMKMetadata

/// `MetadataMaintenance`: durability, whole-store reads for fsck, closing.
final class MetadataMaintenanceContractTests: MetadataContractCase {
    func testEveryFileWithAnyRowIsListedWithItsRows() {
        forEachBackend { backend in
            let store: any MetadataBackend = backend
            XCTAssertEqual(try store.allFileIds(), [])
            try store.insertFileKey(fileID: fid(3), record(3))
            try store.setXattr(fileID: fid(1), name: "user.a", value: [1], mode: .any)
            try store.changeLinks(add: [(fid(2), [2])])
            XCTAssertEqual(try store.allFileIds(), [fid(1), fid(2), fid(3)], "orphan xattrs and bindings count: fsck must see them")
            let rows = try store.rows(fileID: fid(3))
            XCTAssertEqual(rows.map(\.name), rows.map(\.name).sorted())
            XCTAssertTrue(rows.contains { $0.value == record(3).edek && $0.keyVersion == 1 }, "the key row is among the rows")
            XCTAssertEqual(try store.rows(fileID: fid(1)), [FileRow(name: "user.a", value: [1], keyVersion: nil)])
            XCTAssertEqual(try store.rows(fileID: fid(9)), [])
        }
    }

    func testDurableRowsSurviveReopen() {
        forEachBackend { store, backend, scratch in
            try store.addKeyVersion(version(1))
            try store.insertFileKey(fileID: fid(1), record(1))
            try store.setLongName(hash: [UInt8](repeating: 1, count: 32), name: "n")
            try store.makeDurable()
            try store.makeDurable()
            store.close()
            let again = try backend.reopen(in: scratch)
            defer { again.close() }
            XCTAssertEqual(try again.fileKey(fileID: fid(1)), record(1))
            XCTAssertEqual(try again.activeKeyVersion(), version(1))
            XCTAssertEqual(try again.longName(hash: [UInt8](repeating: 1, count: 32)), "n")
        }
    }

    func testCloseIsIdempotentAndLaterCallsThrow() {
        forEachBackend { backend in
            let store: any MetadataBackend = backend
            store.close()
            store.close()
            XCTAssertNotNil(metadataError { try store.fileKey(fileID: fid(1)) })
            XCTAssertNotNil(metadataError { try store.meta("volume_id") })
            XCTAssertNotNil(metadataError { try store.makeDurable() })
        }
    }
}
