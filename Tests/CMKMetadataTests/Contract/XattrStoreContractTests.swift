import XCTest
import CMKMetadata

/// `XattrStore`: user extended attributes, with `cmkfs.` reserved.
final class XattrStoreContractTests: MetadataContractCase {
    func testSetModes() {
        forEachBackend { backend in
            let store: any XattrStore = backend
            XCTAssertEqual(metadataError { try store.setXattr(fileID: fid(1), name: "user.x", value: [1], mode: .replace) }, .notFound)
            XCTAssertNil(try store.xattr(fileID: fid(1), name: "user.x"))
            try store.setXattr(fileID: fid(1), name: "user.x", value: [1], mode: .create)
            XCTAssertEqual(metadataError { try store.setXattr(fileID: fid(1), name: "user.x", value: [2], mode: .create) }, .exists)
            XCTAssertEqual(try store.xattr(fileID: fid(1), name: "user.x"), [1])
            try store.setXattr(fileID: fid(1), name: "user.x", value: [3], mode: .replace)
            try store.setXattr(fileID: fid(1), name: "user.x", value: [], mode: .any)
            XCTAssertEqual(try store.xattr(fileID: fid(1), name: "user.x"), [], "an empty value is set, not absent")
            XCTAssertNil(try store.xattr(fileID: fid(2), name: "user.x"), "xattrs are per file")
        }
    }

    func testNamesAreSortedBytewiseAndRemovable() {
        forEachBackend { backend in
            let store: any XattrStore = backend
            for name in ["user.b", "user.B", "user.a", "user.é"] { try store.setXattr(fileID: fid(1), name: name, value: [1], mode: .any) }
            XCTAssertEqual(try store.xattrNames(fileID: fid(1)), ["user.B", "user.a", "user.b", "user.é"])
            try store.removeXattr(fileID: fid(1), name: "user.a")
            XCTAssertEqual(metadataError { try store.removeXattr(fileID: fid(1), name: "user.a") }, .notFound)
            XCTAssertEqual(try store.xattrNames(fileID: fid(1)), ["user.B", "user.b", "user.é"])
        }
    }

    func testReservedNamesAreNeitherWrittenNorShown() {
        forEachBackend { backend in
            let store: any XattrStore & FileKeyStore & NameBindingStore = backend
            try store.insertFileKey(fileID: fid(1), record(1), onlyIfActive: false, linkTag: [0xAB])
            XCTAssertNotNil(metadataError { try store.setXattr(fileID: fid(1), name: "cmkfs.edek", value: [0], mode: .any) })
            XCTAssertEqual(try store.fileKey(fileID: fid(1)), record(1), "the key row was not overwritten")
            XCTAssertNil(try store.xattr(fileID: fid(1), name: "cmkfs.edek"))
            XCTAssertEqual(metadataError { try store.removeXattr(fileID: fid(1), name: "cmkfs.edek") }, .notFound)
            try store.setXattr(fileID: fid(1), name: "CMKFS.x", value: [1], mode: .any)
            XCTAssertEqual(try store.xattrNames(fileID: fid(1)), ["CMKFS.x"], "key and binding rows are not listed; case matters")
        }
    }
}
