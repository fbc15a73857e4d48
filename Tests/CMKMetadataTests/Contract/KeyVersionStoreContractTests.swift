import XCTest
import CMKMetadata

/// `KeyVersionStore`: the master-key versions and their states.
final class KeyVersionStoreContractTests: MetadataContractCase {
    func testEmptyStoreHasNoVersions() {
        forEachBackend { backend in
            let store: any KeyVersionStore = backend
            XCTAssertEqual(try store.keyVersions(), [])
            XCTAssertNil(try store.activeKeyVersion())
        }
    }

    func testVersionsAreOrderedAndDuplicatesRefused() {
        forEachBackend { backend in
            let store: any KeyVersionStore = backend
            try store.addKeyVersion(version(2, .deactivated))
            try store.addKeyVersion(version(1, .deactivated))
            try store.addKeyVersion(version(3))
            XCTAssertEqual(self.metadataError { try store.addKeyVersion(self.version(3, .disabled)) }, .exists)
            XCTAssertEqual(try store.keyVersions(), [version(1, .deactivated), version(2, .deactivated), version(3)])
            XCTAssertEqual(try store.activeKeyVersion(), version(3))
        }
    }

    func testEveryStateRoundTripsAndTheHighestActiveWins() {
        forEachBackend { backend in
            let store: any KeyVersionStore = backend
            try store.addKeyVersion(version(1))
            try store.addKeyVersion(version(2))
            XCTAssertEqual(try store.activeKeyVersion()?.version, 2, "with several active, the highest")
            for state in KeyVersionState.allCases {
                try store.setKeyVersionState(keyId: "mk", version: 2, state)
                XCTAssertEqual(try store.keyVersions().last?.state, state)
            }
            XCTAssertEqual(try store.activeKeyVersion()?.version, 1)
            XCTAssertEqual(self.metadataError { try store.setKeyVersionState(keyId: "mk", version: 9, .purged) }, .notFound)
            XCTAssertEqual(self.metadataError { try store.setKeyVersionState(keyId: "other", version: 1, .purged) }, .notFound)
        }
    }
}
