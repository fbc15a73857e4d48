import Foundation
import XCTest
@testable import CMKMetadata

/// The rows behind rotation: switching the active version, the keyset cursor over one version's
/// EDEKs, compare-and-swap re-wraps, and the insert guard that keeps new files off an old version.
final class RotationRowTests: MetadataTestCase {
    func id(_ n: Int) -> [UInt8] { [UInt8](repeating: 0, count: 15) + [UInt8(n)] }

    func storeWithVersion1(files: Int) throws -> MetadataStore {
        let store = try makeStore()
        try store.addKeyVersion(KeyVersionRecord(keyId: "mk", version: 1, state: .active, createdAt: "t1"))
        for n in 0..<files {
            XCTAssertTrue(try store.insertFileKey(fileID: id(n), FileKeyRecord(edek: [1, UInt8(n)], keyId: "mk", keyVersion: 1),
                                                  onlyIfActive: true))
        }
        return store
    }

    func testBeginRotationSwitchesActiveAndRefusesInsertsUnderTheOldVersion() throws {
        let store = try storeWithVersion1(files: 3)
        defer { store.close() }
        try store.beginRotation(to: KeyVersionRecord(keyId: "mk", version: 2, state: .active, createdAt: "t2"),
                                meta: ["rotation": [7], "key_check_version": Array("2".utf8)])
        XCTAssertEqual(try store.keyVersions().map(\.state), [.deactivated, .active])
        XCTAssertEqual(try store.activeKeyVersion()?.version, 2)
        XCTAssertEqual(try store.meta("rotation"), [7])
        // A writer that still thinks v1 is active is refused, and nothing is written.
        XCTAssertFalse(try store.insertFileKey(fileID: id(9), FileKeyRecord(edek: [9], keyId: "mk", keyVersion: 1), onlyIfActive: true))
        XCTAssertNil(try store.fileKey(fileID: id(9)))
        XCTAssertTrue(try store.insertFileKey(fileID: id(9), FileKeyRecord(edek: [9], keyId: "mk", keyVersion: 2), onlyIfActive: true))
        XCTAssertEqual(try store.edekCounts(), [1: 3, 2: 1])
    }

    func testCursorWalksOneVersionInBatchesAndRewrapIsCompareAndSwap() throws {
        let store = try storeWithVersion1(files: 5)
        defer { store.close() }
        let first = try store.wrappedKeys(version: 1, after: nil, limit: 2)
        XCTAssertEqual(first.map(\.fileID), [id(0), id(1)])
        let second = try store.wrappedKeys(version: 1, after: first.last!.fileID, limit: 2)
        XCTAssertEqual(second.map(\.fileID), [id(2), id(3)])
        // One row changed since it was read (rekeyed): its stale re-wrap must not land.
        let changed = try store.storeRewrapped([
            Rewrap(fileID: id(2), oldEdek: [1, 2], newEdek: [2, 2]),
            Rewrap(fileID: id(3), oldEdek: [0xFF], newEdek: [2, 3]),
        ], newVersion: 2, meta: ["rotation": [1]])
        XCTAssertEqual(changed, 1)
        XCTAssertEqual(try store.fileKey(fileID: id(2)), FileKeyRecord(edek: [2, 2], keyId: "mk", keyVersion: 2))
        XCTAssertEqual(try store.fileKey(fileID: id(3)), FileKeyRecord(edek: [1, 3], keyId: "mk", keyVersion: 1))
        XCTAssertEqual(try store.fileIDs(version: 1), [id(0), id(1), id(3), id(4)])
        XCTAssertEqual(try store.meta("rotation"), [1])
        try store.deleteMeta("rotation")
        XCTAssertNil(try store.meta("rotation"))
    }

    /// A rotation onto another provider key: each re-wrapped file's key-id row moves with its
    /// EDEK (in the same transaction), and a row that changed since it was read keeps both.
    func testRewrapOntoAnotherKeyMovesTheFilesKeyIDWithItsEDEK() throws {
        let store = try storeWithVersion1(files: 3)
        defer { store.close() }
        try store.beginRotation(to: KeyVersionRecord(keyId: "mk-new", version: 2, state: .active, createdAt: "t2"), meta: [:])
        let changed = try store.storeRewrapped([
            Rewrap(fileID: id(0), oldEdek: [1, 0], newEdek: [2, 0]),
            Rewrap(fileID: id(1), oldEdek: [0xFF], newEdek: [2, 1]),
        ], newVersion: 2, newKeyID: "mk-new", meta: [:])
        XCTAssertEqual(changed, 1)
        XCTAssertEqual(try store.fileKey(fileID: id(0)), FileKeyRecord(edek: [2, 0], keyId: "mk-new", keyVersion: 2))
        XCTAssertEqual(try store.fileKey(fileID: id(1)), FileKeyRecord(edek: [1, 1], keyId: "mk", keyVersion: 1))
        XCTAssertEqual(try store.fileKey(fileID: id(2)), FileKeyRecord(edek: [1, 2], keyId: "mk", keyVersion: 1))
    }

    /// Two processes' connections committing and checkpointing at once: before the retry, the
    /// checkpoint that met the other's checkpointer lock failed at once with SQLITE_BUSY.
    func testConcurrentCheckpointsFromTwoConnectionsDoNotFail() throws {
        let a = try makeStore()
        let b = try MetadataStore.open(at: path("meta.db"))
        defer { a.close(); b.close() }
        let failures = DispatchQueue(label: "failures")
        nonisolated(unsafe) var errors: [String] = []  // Sound: appended only on the serial queue, read after both finish.
        let dbPath = path("meta.db")
        DispatchQueue.concurrentPerform(iterations: 3) { worker in
            for i in 0..<300 {
                do {
                    if worker == 2 {
                        // A command that opens the database, reads and closes (cmkfs key list).
                        let c = try MetadataStore.open(at: dbPath)
                        _ = try c.keyVersions()
                        c.close()
                        continue
                    }
                    let store = worker == 0 ? a : b
                    try store.setMeta("k\(worker)", [UInt8(i & 0xFF)] + [UInt8](repeating: 0, count: 4000))
                    try store.makeDurable()
                } catch {
                    failures.sync { errors.append("\(worker)/\(i): \(error)") }
                }
            }
        }
        failures.sync { XCTAssertEqual(errors.prefix(3), []) }
    }
}
