import Dispatch
import Foundation
import Synchronization
import XCTest
import CMKMetadata

/// `FileKeyStore`: per-file wrapped data keys.
final class FileKeyStoreContractTests: MetadataContractCase {
    func testInsertReadAndRefuseASecondKey() {
        forEachBackend { backend in
            let store: any FileKeyStore = backend
            XCTAssertNil(try store.fileKey(fileID: fid(1)))
            XCTAssertTrue(try store.insertFileKey(fileID: fid(1), record(1)))
            XCTAssertEqual(try store.fileKey(fileID: fid(1)), record(1))
            XCTAssertEqual(metadataError { try store.insertFileKey(fileID: fid(1), record(2, keyId: "other", version: 5)) }, .exists)
            XCTAssertEqual(try store.fileKey(fileID: fid(1)), record(1), "the first key stays")
        }
    }

    func testMalformedFileIdsAreRefusedNotMissed() {
        forEachBackend { backend in
            let store: any FileKeyStore = backend
            for bad in [[], [1, 2, 3], [UInt8](repeating: 1, count: 17)] as [[UInt8]] {
                guard case .io? = metadataError({ try store.fileKey(fileID: bad) }) else { return XCTFail("read of a \(bad.count)-byte id") }
                guard case .io? = metadataError({ try store.insertFileKey(fileID: bad, record(1)) }) else { return XCTFail("insert of a \(bad.count)-byte id") }
                guard case .io? = metadataError({ try store.deleteFile(fileID: bad) }) else { return XCTFail("delete of a \(bad.count)-byte id") }
            }
        }
    }

    func testOnlyIfActiveWritesNothingUnderAnInactiveVersion() {
        forEachBackend { backend in
            let store: any FileKeyStore & KeyVersionStore & NameBindingStore = backend
            try store.addKeyVersion(version(1, .deactivated))
            try store.addKeyVersion(version(2))
            XCTAssertFalse(try store.insertFileKey(fileID: fid(1), record(1, version: 1), onlyIfActive: true, linkTag: [1]))
            XCTAssertNil(try store.fileKey(fileID: fid(1)))
            XCTAssertFalse(try store.hasAnyLink(fileID: fid(1)), "a refused insert leaves no binding either")
            XCTAssertTrue(try store.insertFileKey(fileID: fid(1), record(1, version: 2), onlyIfActive: true, linkTag: [1]))
            XCTAssertTrue(try store.hasLink(fileID: fid(1), tag: [1]), "the first binding comes with the key")
            XCTAssertTrue(try store.insertFileKey(fileID: fid(2), record(2, version: 1), onlyIfActive: false, linkTag: nil),
                          "without the guard any version is stored (init, tests)")
        }
    }

    func testDeleteIsIdempotentAndBatched() {
        forEachBackend { backend in
            let store: any FileKeyStore & XattrStore = backend
            for n in 1...4 {
                try store.insertFileKey(fileID: fid(n), record(UInt8(n)))
                try store.setXattr(fileID: fid(n), name: "user.a", value: [UInt8(n)], mode: .any)
            }
            try store.deleteFile(fileID: fid(1))
            XCTAssertNoThrow(try store.deleteFile(fileID: fid(1)), "an interrupted unlink can be retried")
            try store.deleteFiles(fileIDs: [fid(2), fid(3), fid(99)])
            for n in 1...3 {
                XCTAssertNil(try store.fileKey(fileID: fid(n)))
                XCTAssertNil(try store.xattr(fileID: fid(n), name: "user.a"), "a file's xattrs go with it")
            }
            XCTAssertEqual(try store.fileKey(fileID: fid(4)), record(4))
            XCTAssertEqual(try store.xattr(fileID: fid(4), name: "user.a"), [4])
            XCTAssertEqual(try store.fileCount(), 1)
        }
    }

    func testCountsAndIdsPerVersion() {
        forEachBackend { backend in
            let store: any FileKeyStore & XattrStore = backend
            XCTAssertEqual(try store.fileCount(), 0)
            XCTAssertEqual(try store.edekCounts(), [:])
            for n in [5, 1, 3] { try store.insertFileKey(fileID: fid(n), record(1, version: 1)) }
            try store.insertFileKey(fileID: fid(2), record(2, version: 2))
            try store.setXattr(fileID: fid(7), name: "user.only", value: [1], mode: .any)
            XCTAssertEqual(try store.fileCount(), 4, "a file with only xattrs has no key")
            XCTAssertEqual(try store.edekCounts(), [1: 3, 2: 1])
            XCTAssertEqual(try store.fileIDs(version: 1), [fid(1), fid(3), fid(5)], "in file-id order")
            XCTAssertEqual(try store.fileIDs(version: 3), [])
        }
    }

    func testInstallRekeyedKeyIsAllOrNothing() {
        forEachBackend { backend in
            let store: any MetadataBackend = backend
            try store.addKeyVersion(version(1, .deactivated))
            try store.addKeyVersion(version(2))
            try store.insertFileKey(fileID: fid(1), record(1, version: 1))
            try store.setXattr(fileID: fid(1), name: "user.a", value: [1], mode: .any)
            try store.setMeta("rekey/1", [1])
            // Under an inactive version: nothing is written and the journal entry stays.
            XCTAssertFalse(try store.installRekeyedKey(fileID: fid(1), record(9, version: 1), xattrs: [("user.a", [9])], journalKey: "rekey/1"))
            XCTAssertEqual(try store.fileKey(fileID: fid(1)), record(1, version: 1))
            XCTAssertEqual(try store.xattr(fileID: fid(1), name: "user.a"), [1])
            XCTAssertEqual(try store.meta("rekey/1"), [1])
            // Under the active one: key, re-sealed xattrs and journal change together.
            XCTAssertTrue(try store.installRekeyedKey(fileID: fid(1), record(8, version: 2), xattrs: [("user.a", [8])], journalKey: "rekey/1"))
            XCTAssertEqual(try store.fileKey(fileID: fid(1)), record(8, version: 2))
            XCTAssertEqual(try store.xattr(fileID: fid(1), name: "user.a"), [8])
            XCTAssertNil(try store.meta("rekey/1"))
            XCTAssertEqual(try store.edekCounts(), [2: 1])
            // A file without a key is not created by a rekey.
            XCTAssertEqual(metadataError { try store.installRekeyedKey(fileID: fid(2), record(7, version: 2), xattrs: [], journalKey: "rekey/2") }, .notFound)
            XCTAssertNil(try store.fileKey(fileID: fid(2)))
        }
    }

    func testConcurrentInsertsAndReadsFromFourThreads() {
        forEachBackend { backend in
            let store: any FileKeyStore = backend
            let failures = Mutex<[String]>([])
            let ids = (0..<400).map(fid), records = (0..<4).map { record(UInt8($0)) }
            DispatchQueue.concurrentPerform(iterations: 4) { thread in
                for n in 0..<50 {
                    let id = ids[thread * 100 + n]
                    do {
                        try store.insertFileKey(fileID: id, records[thread])
                        guard try store.fileKey(fileID: id) == records[thread] else {
                            failures.withLock { $0.append("thread \(thread): file \(n) read back wrong") }
                            return
                        }
                    } catch {
                        failures.withLock { $0.append("thread \(thread): \(error)") }
                        return
                    }
                }
            }
            XCTAssertEqual(failures.withLock { $0 }, [])
            XCTAssertEqual(try store.fileCount(), 200)
        }
    }
}
