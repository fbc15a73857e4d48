import Foundation
import XCTest
import CMKMetadata

/// The metadata backends the contract suites run against. A new backend (PostgreSQL, say) is a
/// new case here: every suite in this folder then runs against it too, through the protocols
/// only (CMKMetadata/MetadataBackend.swift), so what the volume and FUSE layers rely on is checked
/// for it without a line of new test. What only SQLite does (file modes, schema migration, the
/// full-disk reserve) is tested beside it (OpenCreateTests, FileRowTests, RotationRowTests).
enum ContractBackend: String, CaseIterable {
    case sqlite = "SQLite MetadataStore"

    /// A new, empty backend whose state lives under `scratch` (a fresh directory).
    func create(in scratch: String) throws -> any MetadataBackend {
        switch self {
        case .sqlite: return try MetadataStore.create(at: scratch + "/meta.db")
        }
    }

    /// The backend made by `create(in:)` in `scratch`, opened again (after a close).
    func reopen(in scratch: String) throws -> any MetadataBackend {
        switch self {
        case .sqlite: return try MetadataStore.open(at: scratch + "/meta.db")
        }
    }
}

/// The base of every contract suite: runs a check against a fresh instance of each backend and
/// names the backend a failure came from.
class MetadataContractCase: XCTestCase {
    /// Runs `check` once per backend, with a fresh backend and its scratch directory; closes the
    /// backend and removes the directory even when the check fails.
    func forEachBackend(_ check: (_ store: any MetadataBackend, _ backend: ContractBackend, _ scratch: String) throws -> Void) {
        for backend in ContractBackend.allCases {
            let failuresBefore = testRun?.totalFailureCount ?? 0
            let scratch = NSTemporaryDirectory() + "cmkmetadata-contract-\(UUID().uuidString.prefix(8).lowercased())"
            do {
                try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: false)
                defer { try? FileManager.default.removeItem(atPath: scratch) }
                let store = try backend.create(in: scratch)
                defer { store.close() }
                try check(store, backend, scratch)
            } catch {
                XCTFail("\(backend.rawValue): \(error)")
            }
            if (testRun?.totalFailureCount ?? 0) > failuresBefore {
                XCTFail("the failures above came from the \(backend.rawValue)")
            }
        }
    }

    /// Runs `check` once per backend with a fresh backend.
    func forEachBackend(_ check: (_ store: any MetadataBackend) throws -> Void) {
        forEachBackend { store, _, _ in try check(store) }
    }

    /// The MetadataError `body` throws; records a failure (and returns nil) if it returns or
    /// throws something else.
    func metadataError<T>(file: StaticString = #filePath, line: UInt = #line, _ body: () throws -> T) -> MetadataError? {
        do {
            _ = try body()
            XCTFail("expected a MetadataError, got success", file: file, line: line)
        } catch let error as MetadataError {
            return error
        } catch {
            XCTFail("expected a MetadataError, got \(error)", file: file, line: line)
        }
        return nil
    }

    /// A deterministic 16-byte file id; ids sort by `n` (big-endian in the last two bytes).
    func fid(_ n: Int) -> [UInt8] {
        [UInt8](repeating: 0x5A, count: 14) + [UInt8(truncatingIfNeeded: n >> 8), UInt8(truncatingIfNeeded: n)]
    }

    func record(_ byte: UInt8, keyId: String = "mk", version: Int = 1) -> FileKeyRecord {
        FileKeyRecord(edek: [UInt8](repeating: byte, count: 60), keyId: keyId, keyVersion: version)
    }

    func version(_ n: Int, _ state: KeyVersionState = .active, keyId: String = "mk") -> KeyVersionRecord {
        KeyVersionRecord(keyId: keyId, version: n, state: state, createdAt: "2026-12-06T00:00:0\(n % 10)Z")
    }
}
