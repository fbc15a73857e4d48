import Foundation
import XCTest
@testable import CMKMetadata

/// A test case with a private temporary directory, removed in tearDown even when a test fails.
class MetadataTestCase: XCTestCase {
    var directory: URL!

    override func setUpWithError() throws {
        try super.setUpWithError()
        directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("cmkmetadata-tests-\(UUID().uuidString)", isDirectory: true)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: false)
    }

    override func tearDownWithError() throws {
        if let directory { try? FileManager.default.removeItem(at: directory) }
        directory = nil
        try super.tearDownWithError()
    }

    /// A path inside the test directory.
    func path(_ name: String) -> String { directory.appendingPathComponent(name).path }

    /// A new store at `name` in the test directory.
    func makeStore(_ name: String = "meta.db") throws -> MetadataStore {
        try MetadataStore.create(at: path(name))
    }

    /// The error `body` throws; records a failure (and returns nil) if it returns normally.
    func expectError<T>(file: StaticString = #filePath, line: UInt = #line,
                        _ body: () throws -> T) -> MetadataError? {
        // Untyped on purpose: typed-throws inference for trailing closures is not reliable here.
        do {
            _ = try body()
            XCTFail("expected a MetadataError, got success", file: file, line: line)
            return nil
        } catch let error as MetadataError {
            return error
        } catch {
            XCTFail("expected a MetadataError, got \(error)", file: file, line: line)
            return nil
        }
    }

    /// A deterministic 16-byte file id.
    func fileID(_ a: Int, _ b: Int = 0) -> [UInt8] {
        var id = [UInt8](repeating: 0xA5, count: 16)
        id[0] = UInt8(truncatingIfNeeded: a)
        id[1] = UInt8(truncatingIfNeeded: a >> 8)
        id[2] = UInt8(truncatingIfNeeded: b)
        id[3] = UInt8(truncatingIfNeeded: b >> 8)
        return id
    }

    func key(_ edekByte: UInt8, keyId: String = "kms-key-1", version: Int = 1) -> FileKeyRecord {
        FileKeyRecord(edek: [UInt8](repeating: edekByte, count: 60), keyId: keyId, keyVersion: version)
    }
}
