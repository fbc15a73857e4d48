import XCTest
import Glibc
@testable import CMKKeys

/// The keystore permission check reads every name of a directory through CMKSystem's
/// readdir reader (which never copies `d_name` past a record; SourceRulesTests keeps it the
/// only reader): names of every length are seen, and one exposed key file among many is found.
final class KeystoreModesTests: XCTestCase {
    func testAnExposedKeyFileAmongNamesOfEveryLengthIsRefused() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("keystore-modes-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o700])
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // More entries than one getdents64 batch, names from 5 to 250 bytes.
        for i in 0..<1500 {
            let name = "mk-\(i)" + String(repeating: "k", count: i % 242) + ".key"
            XCTAssertTrue(FileManager.default.createFile(atPath: dir + "/" + name, contents: nil, attributes: [.posixPermissions: 0o600]))
        }
        XCTAssertEqual(try KeystoreModes.check(dir), [])

        let exposed = "mk-exposed" + String(repeating: "x", count: 200) + ".key"
        XCTAssertTrue(FileManager.default.createFile(atPath: dir + "/" + exposed, contents: nil, attributes: [.posixPermissions: 0o644]))
        XCTAssertThrowsError(try KeystoreModes.check(dir)) { error in
            XCTAssertTrue((error as? KeystoreModes.Refusal)?.description.contains(exposed) == true, "\(error)")
        }
    }
}
