import Dispatch
import Foundation
import Synchronization
import XCTest
@testable import CMKMetadata

final class FileRowTests: MetadataTestCase {
    func testInsertFileKeyTwiceIsExistsAndKeepsTheFirst() throws {
        let store = try makeStore()
        try store.insertFileKey(fileID: fileID(1), key(1))
        XCTAssertEqual(expectError { try store.insertFileKey(fileID: fileID(1), key(2, keyId: "other", version: 5)) }, .exists)
        XCTAssertEqual(try store.fileKey(fileID: fileID(1)), key(1))
        XCTAssertEqual(try store.fileCount(), 1)
    }

    func testFileKeyOfUnknownFileIsNil() throws {
        let store = try makeStore()
        XCTAssertNil(try store.fileKey(fileID: fileID(9)))
        try store.setXattr(fileID: fileID(9), name: "user.a", value: [1], mode: .any)
        XCTAssertNil(try store.fileKey(fileID: fileID(9)), "an xattr alone is not a file key")
    }

    func testWrongFileIdLengthIsRejected() throws {
        let store = try makeStore()
        guard case .io? = expectError({ try store.insertFileKey(fileID: [1, 2, 3], key(1)) }) else {
            return XCTFail("expected .io for a 3-byte file id")
        }
        guard case .io? = expectError({ try store.fileKey(fileID: []) }) else {
            return XCTFail("expected .io for an empty file id")
        }
    }

    func testDeleteFileRemovesKeyAndXattrsOnly() throws {
        let store = try makeStore()
        for n in 1...2 {
            try store.insertFileKey(fileID: fileID(n), key(UInt8(n)))
            try store.setXattr(fileID: fileID(n), name: "user.a", value: [1], mode: .create)
            try store.setXattr(fileID: fileID(n), name: "user.b", value: [2], mode: .create)
        }
        try store.deleteFile(fileID: fileID(1))
        XCTAssertNil(try store.fileKey(fileID: fileID(1)))
        XCTAssertEqual(try store.xattrNames(fileID: fileID(1)), [])
        XCTAssertNil(try store.xattr(fileID: fileID(1), name: "user.a"))
        XCTAssertEqual(try store.fileKey(fileID: fileID(2)), key(2))
        XCTAssertEqual(try store.xattrNames(fileID: fileID(2)), ["user.a", "user.b"])
        XCTAssertEqual(try store.fileCount(), 1)
        XCTAssertNoThrow(try store.deleteFile(fileID: fileID(1)), "deleting again is harmless")
    }

    func testXattrSetModes() throws {
        let store = try makeStore()
        let id = fileID(3)
        XCTAssertEqual(expectError { try store.setXattr(fileID: id, name: "user.x", value: [1], mode: .replace) }, .notFound)
        XCTAssertNil(try store.xattr(fileID: id, name: "user.x"))

        try store.setXattr(fileID: id, name: "user.x", value: [1], mode: .create)
        XCTAssertEqual(expectError { try store.setXattr(fileID: id, name: "user.x", value: [2], mode: .create) }, .exists)
        XCTAssertEqual(try store.xattr(fileID: id, name: "user.x"), [1])

        try store.setXattr(fileID: id, name: "user.x", value: [3], mode: .replace)
        XCTAssertEqual(try store.xattr(fileID: id, name: "user.x"), [3])

        try store.setXattr(fileID: id, name: "user.x", value: [4, 4], mode: .any)
        try store.setXattr(fileID: id, name: "user.y", value: [], mode: .any)
        XCTAssertEqual(try store.xattr(fileID: id, name: "user.x"), [4, 4])
        XCTAssertEqual(try store.xattr(fileID: id, name: "user.y"), [], "an empty value is a value, not absence")

        try store.removeXattr(fileID: id, name: "user.x")
        XCTAssertNil(try store.xattr(fileID: id, name: "user.x"))
        XCTAssertEqual(expectError { try store.removeXattr(fileID: id, name: "user.x") }, .notFound)
    }

    func testXattrNamesAreSortedAndExcludeInternalRows() throws {
        let store = try makeStore()
        let id = fileID(4)
        try store.insertFileKey(fileID: id, key(1))
        for name in ["user.zeta", "user.alpha", "user.Mid", "CMKFS.lookalike"] {
            try store.setXattr(fileID: id, name: name, value: [0], mode: .create)
        }
        XCTAssertEqual(try store.xattrNames(fileID: id), ["CMKFS.lookalike", "user.Mid", "user.alpha", "user.zeta"])
        XCTAssertNil(try store.xattr(fileID: id, name: MetadataStore.edekName), "internal rows are not xattrs")
        XCTAssertEqual(expectError { try store.removeXattr(fileID: id, name: MetadataStore.kekName) }, .notFound)
        guard case .io? = expectError({ try store.setXattr(fileID: id, name: "cmkfs.edek", value: [0], mode: .any) }) else {
            return XCTFail("writing a reserved name must fail")
        }
        XCTAssertEqual(try store.fileKey(fileID: id), key(1), "the file key must survive the refused write")
    }

    func testFileCountAndEdekCounts() throws {
        let store = try makeStore()
        XCTAssertEqual(try store.fileCount(), 0)
        XCTAssertEqual(try store.edekCounts(), [:])
        for n in 0..<5 { try store.insertFileKey(fileID: fileID(n), key(1, version: 1)) }
        for n in 5..<8 { try store.insertFileKey(fileID: fileID(n), key(2, keyId: "kms-key-2", version: 2)) }
        try store.setXattr(fileID: fileID(0), name: "user.a", value: [1], mode: .any)
        XCTAssertEqual(try store.fileCount(), 8)
        XCTAssertEqual(try store.edekCounts(), [1: 5, 2: 3])
        try store.deleteFile(fileID: fileID(6))
        XCTAssertEqual(try store.fileCount(), 7)
        XCTAssertEqual(try store.edekCounts(), [1: 5, 2: 2])
    }

    func testKeyVersions() throws {
        let store = try makeStore()
        XCTAssertNil(try store.activeKeyVersion())
        let v2 = KeyVersionRecord(keyId: "k", version: 2, state: .active, createdAt: "2025-02-01T00:00:00Z")
        let v1 = KeyVersionRecord(keyId: "k", version: 1, state: .active, createdAt: "2025-01-01T00:00:00Z")
        try store.addKeyVersion(v2)
        try store.addKeyVersion(v1)
        XCTAssertEqual(expectError { try store.addKeyVersion(v1) }, .exists)
        XCTAssertEqual(try store.keyVersions(), [v1, v2], "ordered by version")
        XCTAssertEqual(try store.activeKeyVersion(), v2)

        try store.setKeyVersionState(keyId: "k", version: 2, .disabled)
        XCTAssertEqual(try store.activeKeyVersion(), v1)
        try store.setKeyVersionState(keyId: "k", version: 1, .purged)
        XCTAssertNil(try store.activeKeyVersion())
        XCTAssertEqual(try store.keyVersions().map(\.state), [.purged, .disabled])
        XCTAssertEqual(expectError { try store.setKeyVersionState(keyId: "k", version: 3, .active) }, .notFound)
    }

    func testMetaOverwrite() throws {
        let store = try makeStore()
        try store.setMeta("key-check", [1])
        try store.setMeta("key-check", [2, 2])
        try store.setMeta("empty", [])
        XCTAssertEqual(try store.meta("key-check"), [2, 2])
        XCTAssertEqual(try store.meta("empty"), [])
    }

    func testConcurrentInsertsFromFourThreads() throws {
        let store = try makeStore()
        let failures = Mutex<[MetadataError]>([])
        // Built up front so the worker threads share only Sendable values, not the test case.
        let ids = (0..<4).map { thread in (0..<500).map { fileID(thread, $0) } }
        let keys = (0..<4).map { key(UInt8($0), version: $0 + 1) }
        DispatchQueue.concurrentPerform(iterations: 4) { thread in
            for id in ids[thread] {
                do throws(MetadataError) {
                    try store.insertFileKey(fileID: id, keys[thread])
                } catch {
                    failures.withLock { $0.append(error) }
                }
            }
        }
        XCTAssertEqual(failures.withLock { $0 }, [])
        XCTAssertEqual(try store.fileCount(), 2000)
        XCTAssertEqual(try store.edekCounts(), [1: 500, 2: 500, 3: 500, 4: 500])
        XCTAssertEqual(try store.fileKey(fileID: fileID(3, 499)), key(3, version: 4))
    }
}
