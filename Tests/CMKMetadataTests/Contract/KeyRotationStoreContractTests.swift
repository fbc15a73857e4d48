import XCTest
import CMKMetadata

/// `KeyRotationStore`: switching the active version and re-wrapping in resumable batches.
final class KeyRotationStoreContractTests: MetadataContractCase {
    func testBeginRotationSwitchesVersionsAndSetsFactsTogether() {
        forEachBackend { backend in
            let store: any KeyRotationStore & VolumeFactStore = backend
            try store.addKeyVersion(version(1))
            try store.insertFileKey(fileID: fid(1), record(1, version: 1), onlyIfActive: true, linkTag: nil)
            try store.beginRotation(to: version(2), meta: ["rotation": [1], "key_check_version": [2]])
            XCTAssertEqual(try store.keyVersions().map(\.state), [.deactivated, .active])
            XCTAssertEqual(try store.activeKeyVersion(), version(2))
            XCTAssertEqual(try store.meta("rotation"), [1])
            XCTAssertEqual(try store.meta("key_check_version"), [2])
            XCTAssertFalse(try store.insertFileKey(fileID: fid(2), record(2, version: 1), onlyIfActive: true, linkTag: nil),
                           "from the commit on, the old version wraps nothing new")
            XCTAssertEqual(metadataError { try store.beginRotation(to: self.version(2), meta: ["rotation": [9]]) }, .exists)
            XCTAssertEqual(try store.activeKeyVersion(), version(2), "a failed begin changes nothing")
            XCTAssertEqual(try store.meta("rotation"), [1], "a failed begin changes nothing")
        }
    }

    func testKeysetCursorVisitsEachKeyOfOneVersionOnce() {
        forEachBackend { backend in
            let store: any KeyRotationStore = backend
            for n in (0..<7).reversed() { try store.insertFileKey(fileID: fid(n), record(UInt8(n), version: 1)) }
            try store.insertFileKey(fileID: fid(50), record(50, version: 2))
            var seen: [[UInt8]] = []
            var after: [UInt8]? = nil
            while true {
                let batch = try store.wrappedKeys(version: 1, after: after, limit: 3)
                XCTAssertLessThanOrEqual(batch.count, 3)
                guard let last = batch.last else { break }
                XCTAssertTrue(batch.allSatisfy { $0.keyVersion == 1 })
                XCTAssertEqual(batch.map(\.edek), batch.map { [UInt8](repeating: $0.fileID.last!, count: 60) })
                seen += batch.map(\.fileID)
                after = last.fileID
            }
            XCTAssertEqual(seen, (0..<7).map(fid))
        }
    }

    func testRewrapIsCompareAndSwapAndStoresProgressWithIt() {
        forEachBackend { backend in
            let store: any KeyRotationStore & VolumeFactStore = backend
            for n in 0..<3 { try store.insertFileKey(fileID: fid(n), record(UInt8(n), version: 1)) }
            let changed = try store.storeRewrapped([
                Rewrap(fileID: fid(0), oldEdek: record(0).edek, newEdek: [2, 0]),
                Rewrap(fileID: fid(1), oldEdek: [0xFF], newEdek: [2, 1]),   // rekeyed since it was read
                Rewrap(fileID: fid(9), oldEdek: [0], newEdek: [2, 9]),      // deleted since it was read
            ], newVersion: 2, meta: ["rotation": [7]])
            XCTAssertEqual(changed, 1)
            XCTAssertEqual(try store.fileKey(fileID: fid(0)), FileKeyRecord(edek: [2, 0], keyId: "mk", keyVersion: 2))
            XCTAssertEqual(try store.fileKey(fileID: fid(1)), record(1, version: 1))
            XCTAssertNil(try store.fileKey(fileID: fid(9)), "a re-wrap never creates a key")
            XCTAssertEqual(try store.meta("rotation"), [7])
            XCTAssertEqual(try store.fileIDs(version: 1), [fid(1), fid(2)])
        }
    }
}
