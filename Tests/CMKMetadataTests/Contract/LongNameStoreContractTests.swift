import XCTest
import CMKMetadata

/// `LongNameStore`: content-addressed long encrypted names.
final class LongNameStoreContractTests: MetadataContractCase {
    func testStoreReadIdempotentDelete() {
        forEachBackend { backend in
            let store: any LongNameStore = backend
            let h1 = [UInt8](repeating: 1, count: 32), h2 = [UInt8](repeating: 2, count: 32)
            XCTAssertNil(try store.longName(hash: h1))
            let long = String(repeating: "A", count: 4000)
            try store.setLongName(hash: h2, name: "second")
            try store.setLongName(hash: h1, name: long)
            try store.setLongName(hash: h1, name: long)
            XCTAssertEqual(try store.longName(hash: h1), long)
            XCTAssertEqual(try store.allLongNameHashes(), [h1, h2], "sorted, each once")
            try store.deleteLongName(hash: h1)
            XCTAssertNoThrow(try store.deleteLongName(hash: h1), "deleting an absent name is not an error")
            XCTAssertNil(try store.longName(hash: h1))
            XCTAssertEqual(try store.allLongNameHashes(), [h2])
        }
    }
}
