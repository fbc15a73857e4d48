import XCTest
import CMKMetadata

/// `NameBindingStore`: which entries a regular file may be reached through.
final class NameBindingStoreContractTests: MetadataContractCase {
    func testAddCheckAndRenameAtomically() {
        forEachBackend { backend in
            let store: any NameBindingStore = backend
            XCTAssertFalse(try store.hasAnyLink(fileID: fid(1)))
            try store.changeLinks(add: [(fid(1), [1]), (fid(2), [2])])
            try store.changeLinks(add: [(fid(1), [1])])
            XCTAssertTrue(try store.hasLink(fileID: fid(1), tag: [1]))
            XCTAssertFalse(try store.hasLink(fileID: fid(1), tag: [2]), "a binding is per file and tag")
            XCTAssertFalse(try store.hasLink(fileID: fid(2), tag: [1]))
            // A rename: the new entry's binding in, the old one out.
            try store.changeLinks(add: [(fid(1), [3])], remove: [(fid(1), [1])])
            XCTAssertFalse(try store.hasLink(fileID: fid(1), tag: [1]))
            XCTAssertTrue(try store.hasLink(fileID: fid(1), tag: [3]))
            try store.changeLinks(add: [], remove: [(fid(1), [3]), (fid(1), [9])])
            XCTAssertFalse(try store.hasAnyLink(fileID: fid(1)), "removing an absent binding is not an error")
            XCTAssertTrue(try store.hasAnyLink(fileID: fid(2)))
        }
    }

    /// The key and one binding in one read: the same answers `fileKey` and `hasLink` give.
    func testKeyReadWithABindingAnswersAsTheTwoReads() {
        forEachBackend { backend in
            let store: any NameBindingStore & FileKeyStore = backend
            XCTAssertNil(try store.fileKey(fileID: fid(1), boundBy: [1]).map(\.bound), "no key row: nothing")
            try store.changeLinks(add: [(fid(1), [1])])
            XCTAssertNil(try store.fileKey(fileID: fid(1), boundBy: [1]).map(\.bound), "a binding without a key row is no key")
            try store.insertFileKey(fileID: fid(1), record(1))
            try store.insertFileKey(fileID: fid(2), record(2))
            let bound = try store.fileKey(fileID: fid(1), boundBy: [1])
            XCTAssertEqual(bound?.record, try store.fileKey(fileID: fid(1)))
            XCTAssertEqual(bound?.bound, true)
            XCTAssertEqual(try store.fileKey(fileID: fid(1), boundBy: [2])?.bound, false, "another entry's tag")
            XCTAssertEqual(try store.fileKey(fileID: fid(2), boundBy: [1])?.bound, false, "another file's binding")
            XCTAssertEqual(try store.fileKey(fileID: fid(2), boundBy: [1])?.record, try store.fileKey(fileID: fid(2)))
            try store.changeLinks(add: [], remove: [(fid(1), [1])])
            XCTAssertEqual(try store.fileKey(fileID: fid(1), boundBy: [1])?.bound, false, "a removed binding")
        }
    }

    func testBindingsGoWithTheFileAndAreNotXattrs() {
        forEachBackend { backend in
            let store: any NameBindingStore & FileKeyStore & XattrStore = backend
            try store.insertFileKey(fileID: fid(1), record(1))
            try store.changeLinks(add: [(fid(1), [0xAB, 0xCD])])
            XCTAssertEqual(try store.xattrNames(fileID: fid(1)), [])
            try store.deleteFile(fileID: fid(1))
            XCTAssertFalse(try store.hasAnyLink(fileID: fid(1)))
        }
    }

    func testAMalformedFileIdIsRefused() {
        forEachBackend { backend in
            let store: any NameBindingStore = backend
            guard case .io? = metadataError({ try store.changeLinks(add: [([1, 2], [1])]) }) else { return XCTFail("a 2-byte id was bound") }
            guard case .io? = metadataError({ try store.hasAnyLink(fileID: [1]) }) else { return XCTFail("a 1-byte id was looked up") }
        }
    }
}
