import XCTest
import CMKMetadata

/// `VolumeFactStore`: named volume facts and cursors.
final class VolumeFactStoreContractTests: MetadataContractCase {
    func testSetReadOverwriteDelete() {
        forEachBackend { backend in
            let store: any VolumeFactStore = backend
            XCTAssertNil(try store.meta("volume_id"))
            try store.setMeta("volume_id", [0, 1, 0xFF, 0])
            XCTAssertEqual(try store.meta("volume_id"), [0, 1, 0xFF, 0], "binary values, NULs included, round-trip")
            try store.setMeta("volume_id", [7])
            XCTAssertEqual(try store.meta("volume_id"), [7], "a set overwrites")
            try store.deleteMeta("volume_id")
            XCTAssertNil(try store.meta("volume_id"))
            XCTAssertNoThrow(try store.deleteMeta("volume_id"), "deleting an absent fact is not an error")
        }
    }

    func testKeysByPrefixAreSortedAndLiteral() {
        forEachBackend { backend in
            let store: any VolumeFactStore = backend
            for key in ["rekey/b", "rekey/a", "rekeyX", "rotation", "rekey%/c", "rekey_/d"] { try store.setMeta(key, [1]) }
            XCTAssertEqual(try store.metaKeys(withPrefix: "rekey/"), ["rekey/a", "rekey/b"])
            XCTAssertEqual(try store.metaKeys(withPrefix: "rekey%"), ["rekey%/c"], "a prefix is literal, not a pattern")
            XCTAssertEqual(try store.metaKeys(withPrefix: "rekey_"), ["rekey_/d"], "a prefix is literal, not a pattern")
            XCTAssertEqual(try store.metaKeys(withPrefix: "none"), [])
        }
    }

    func testFactsSurviveCloseAndReopen() {
        forEachBackend { store, backend, scratch in
            try store.setMeta("audit_checkpoint", [9, 9])
            try store.makeDurable()
            store.close()
            let again = try backend.reopen(in: scratch)
            defer { again.close() }
            XCTAssertEqual(try again.meta("audit_checkpoint"), [9, 9])
        }
    }
}
