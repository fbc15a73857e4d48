import Foundation
import Glibc
import XCTest
import CMKCrypto
@testable import CMKKeys

final class SimulatedKMSTests: XCTestCase {
    var root: String!
    /// The keystore directory (inside `root`, so tests can also reach its parent).
    var dir: String { root + "/kms" }

    let volumeA: [UInt8] = Array(repeating: 0xA1, count: 16)
    let volumeB: [UInt8] = Array(repeating: 0xB2, count: 16)
    let file1: [UInt8] = Array(0..<16)
    let file2: [UInt8] = Array(16..<32)

    override func setUpWithError() throws {
        try super.setUpWithError()
        root = FileManager.default.temporaryDirectory.appendingPathComponent("cmkkeys-tests-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: false)
    }

    override func tearDown() {
        if let root { try? FileManager.default.removeItem(atPath: root) }
        root = nil
        super.tearDown()
    }

    private func kms() throws -> SimulatedKMS { try SimulatedKMS(directory: dir, create: true) }

    private func dek() throws -> SecretBytes { try SecretBytes.random(count: 32) }

    private func keyPath(_ key: KeyRef) -> String { "\(dir)/\(key.keyID).key" }

    /// The error `body` throws as a `KeyProviderError`; a failure if it returns or throws another type.
    private func expectError<T>(_ message: String = "", file: StaticString = #filePath, line: UInt = #line,
                                body: () throws -> T) -> KeyProviderError? {
        do {
            _ = try body()
            XCTFail("expected a KeyProviderError, got success. \(message)", file: file, line: line)
        } catch let error as KeyProviderError {
            return error
        } catch {
            XCTFail("expected a KeyProviderError, got \(error). \(message)", file: file, line: line)
        }
        return nil
    }

    private func assertKeyNotFound<T>(_ message: String = "", file: StaticString = #filePath, line: UInt = #line,
                                      _ body: () throws -> T) {
        let error = expectError(message, file: file, line: line, body: body)
        guard case .keyNotFound? = error else {
            return XCTFail("expected keyNotFound, got \(String(describing: error)). \(message)", file: file, line: line)
        }
    }

    private func assertCorrupt<T>(_ message: String = "", file: StaticString = #filePath, line: UInt = #line,
                                  _ body: () throws -> T) {
        let error = expectError(message, file: file, line: line, body: body)
        guard case .corrupt? = error else {
            return XCTFail("expected corrupt, got \(String(describing: error)). \(message)", file: file, line: line)
        }
    }

    /// The master key bytes of `version`, read straight from the documented key file format.
    private func masterKey(_ key: KeyRef) throws -> [UInt8] {
        let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: keyPath(key))))
        let count = Int(bytes[8]) << 24 | Int(bytes[9]) << 16 | Int(bytes[10]) << 8 | Int(bytes[11])
        XCTAssertEqual(bytes.count, 12 + 48 * count)
        for i in 0..<count {
            let at = 12 + 48 * i
            let number = Int(bytes[at]) << 24 | Int(bytes[at + 1]) << 16 | Int(bytes[at + 2]) << 8 | Int(bytes[at + 3])
            if number == key.version { return Array(bytes[(at + 16)..<(at + 48)]) }
        }
        XCTFail("no version \(key.version) in \(keyPath(key))")
        return []
    }

    // MARK: wrap / unwrap

    /// The audit anchor lives in the keystore directory, per volume, and never moves back.
    func testAuditAnchorIsKeptPerVolumeAndRefusesARollback() throws {
        let k = try kms()
        XCTAssertNil(try k.auditAnchor(volumeID: volumeA))
        try k.setAuditAnchor(Array("seven".utf8), seq: 7, volumeID: volumeA)
        try k.setAuditAnchor(Array("other".utf8), seq: 2, volumeID: volumeB)
        XCTAssertEqual(try k.auditAnchor(volumeID: volumeA), Array("seven".utf8))
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir + "/audit-anchors/" + String(repeating: "a1", count: 16) + ".anchor"))
        XCTAssertThrowsError(try k.setAuditAnchor(Array("three".utf8), seq: 3, volumeID: volumeA)) { error in
            XCTAssertTrue("\(error)".contains("refusing to move the audit anchor"), "\(error)")
        }
        XCTAssertEqual(try k.auditAnchor(volumeID: volumeA), Array("seven".utf8))
        try k.setAuditAnchor(Array("nine".utf8), seq: 9, volumeID: volumeA)
        XCTAssertEqual(try k.auditAnchor(volumeID: volumeA), Array("nine".utf8))
        XCTAssertEqual(try k.auditAnchor(volumeID: volumeB), Array("other".utf8))
    }

    func testCreateKeyAndWrapUnwrapRoundTrip() throws {
        let kms = try kms()
        XCTAssertEqual(kms.kind, "embedded")
        XCTAssertEqual(kms.directory, dir)
        let key = try kms.createKey()
        XCTAssertEqual(key.version, 1)
        XCTAssertTrue(key.keyID.hasPrefix("mk-"), key.keyID)
        XCTAssertEqual(try kms.state(of: key), .enabled)
        let other = try kms.createKey()
        XCTAssertNotEqual(key.keyID, other.keyID)

        let context = WrapContext(volumeID: volumeA, fileID: file1)
        let secret = try dek()
        let edek = try kms.wrap(secret, with: key, context: context)
        XCTAssertEqual(edek.count, 12 + 32 + 16)
        let back = try kms.unwrap(edek, with: key, context: context)
        XCTAssertTrue(back.constantTimeEquals(secret))
        // Wrapping again gives another EDEK (fresh nonce) for the same DEK.
        let again = try kms.wrap(secret, with: key, context: context)
        XCTAssertNotEqual(again, edek)
        XCTAssertTrue(try kms.unwrap(again, with: key, context: context).constantTimeEquals(secret))
        // Other DEK sizes round-trip too.
        let small = try SecretBytes.random(count: 1)
        XCTAssertTrue(try kms.unwrap(try kms.wrap(small, with: key, context: context), with: key, context: context)
            .constantTimeEquals(small))
        // The other key cannot unwrap it.
        XCTAssertEqual(expectError { try kms.unwrap(edek, with: other, context: context) }, .unwrapFailed(other))
    }

    /// The request context (who asked, why, the request id) travels with the binding but is no
    /// part of it: an EDEK made under one request unwraps under any other or none, as EDEKs made
    /// before requests carried a context must.
    func testRequestContextIsNoPartOfTheBinding() throws {
        let kms = try kms()
        let key = try kms.createKey()
        let secret = try dek()
        let asked = KeyRequest(operation: "create", uid: 1000, pid: 42, process: "cp", reason: "ticket 7")
        let edek = try kms.wrap(secret, with: key, context: WrapContext(volumeID: volumeA, fileID: file1, request: asked))
        let other = KeyRequest.ownProcess("open")
        XCTAssertNotEqual(asked.id, other.id)
        XCTAssertEqual(asked.id.count, 32)
        XCTAssertTrue(try kms.unwrap(edek, with: key, context: WrapContext(volumeID: volumeA, fileID: file1, request: other))
            .constantTimeEquals(secret))
        XCTAssertTrue(try kms.unwrap(edek, with: key, context: WrapContext(volumeID: volumeA, fileID: file1)).constantTimeEquals(secret))
        XCTAssertEqual(WrapContext(volumeID: volumeA, fileID: file1, request: asked), WrapContext(volumeID: volumeA, fileID: file1))
        XCTAssertEqual(WrapContext(volumeID: volumeA, fileID: file1, request: asked).associatedData(for: key),
                       WrapContext(volumeID: volumeA, fileID: file1).associatedData(for: key))
        XCTAssertEqual(asked.item(3).id, asked.id + ".3")
        XCTAssertEqual(asked.item(3).reason, "ticket 7")
    }

    func testUnwrapUnderAnotherContextFails() throws {
        let kms = try kms()
        let key = try kms.createKey()
        let secret = try dek()
        let edek = try kms.wrap(secret, with: key, context: WrapContext(volumeID: volumeA, fileID: file1))
        for (what, context) in [
            ("other file", WrapContext(volumeID: volumeA, fileID: file2)),
            ("other volume", WrapContext(volumeID: volumeB, fileID: file1)),
            ("both other", WrapContext(volumeID: volumeB, fileID: file2)),
            ("ids swapped", WrapContext(volumeID: file1, fileID: volumeA)),
            ("empty ids", WrapContext(volumeID: [], fileID: [])),
            ("shorter file id", WrapContext(volumeID: volumeA, fileID: Array(file1.prefix(15)))),
        ] {
            XCTAssertEqual(expectError(what) { try kms.unwrap(edek, with: key, context: context) }, .unwrapFailed(key), what)
        }
        XCTAssertTrue(try kms.unwrap(edek, with: key, context: WrapContext(volumeID: volumeA, fileID: file1))
            .constantTimeEquals(secret))
    }

    func testAssociatedDataSeparatesFields() {
        // Length prefixes keep (volume, file) pairs with the same concatenation apart.
        let key = KeyRef(keyID: "mk-1", version: 1)
        let a = WrapContext(volumeID: [1, 2], fileID: [3]).associatedData(for: key)
        let b = WrapContext(volumeID: [1], fileID: [2, 3]).associatedData(for: key)
        XCTAssertNotEqual(a, b)
        XCTAssertNotEqual(a, WrapContext(volumeID: [1, 2], fileID: [3]).associatedData(for: KeyRef(keyID: "mk-1", version: 2)))
        XCTAssertNotEqual(a, WrapContext(volumeID: [1, 2], fileID: [3]).associatedData(for: KeyRef(keyID: "mk-2", version: 1)))
        XCTAssertEqual(a, WrapContext(volumeID: [1, 2], fileID: [3]).associatedData(for: key))
    }

    func testTamperedEDEKFails() throws {
        let kms = try kms()
        let key = try kms.createKey()
        let context = WrapContext(volumeID: volumeA, fileID: file1)
        let edek = try kms.wrap(try dek(), with: key, context: context)
        for i in 0..<edek.count {
            var bad = edek
            bad[i] ^= 0x04
            XCTAssertEqual(expectError("byte \(i)") { try kms.unwrap(bad, with: key, context: context) }, .unwrapFailed(key))
        }
        for bad in [[], Array(edek.prefix(28)), Array(edek.dropLast()), edek + [0]] {
            XCTAssertEqual(expectError("length \(bad.count)") { try kms.unwrap(bad, with: key, context: context) },
                           .unwrapFailed(key))
        }
    }

    func testMasterKeyNeverAppearsInEDEK() throws {
        let kms = try kms()
        let key = try kms.createKey()
        let master = try masterKey(key)
        XCTAssertEqual(master.count, 32)
        XCTAssertNotEqual(master, [UInt8](repeating: 0, count: 32))
        // A DEK equal to nothing in particular, and one equal to zeros: neither leaks the master key.
        for secret in [try dek(), SecretBytes(zeroedCount: 32)] {
            for fileID in [file1, file2] {
                let edek = try kms.wrap(secret, with: key, context: WrapContext(volumeID: volumeA, fileID: fileID))
                // Not the whole key, nor any 8-byte window of it.
                for start in 0...(master.count - 8) {
                    let window = Array(master[start..<(start + 8)])
                    for at in 0...(edek.count - 8) {
                        XCTAssertNotEqual(Array(edek[at..<(at + 8)]), window, "master key bytes \(start)… in the EDEK at \(at)")
                    }
                }
                // Nor the DEK in the clear.
                let plain = secret.withUnsafeBytes { Array($0) }
                XCTAssertNotEqual(Array(edek[12..<44]), plain)
            }
        }
    }

    // MARK: versions and states

    func testCreateVersionKeepsOldVersionsUsable() throws {
        let kms = try kms()
        let v1 = try kms.createKey()
        let context = WrapContext(volumeID: volumeA, fileID: file1)
        let secret1 = try dek()
        let edek1 = try kms.wrap(secret1, with: v1, context: context)

        let v2 = try kms.createVersion(of: v1.keyID)
        XCTAssertEqual(v2, KeyRef(keyID: v1.keyID, version: 2))
        XCTAssertNotEqual(try masterKey(v1), try masterKey(v2))
        XCTAssertTrue(try kms.unwrap(edek1, with: v1, context: context).constantTimeEquals(secret1))
        // The version is bound: a v1 EDEK does not open as v2 and vice versa.
        XCTAssertEqual(expectError { try kms.unwrap(edek1, with: v2, context: context) }, .unwrapFailed(v2))
        let secret2 = try dek()
        let edek2 = try kms.wrap(secret2, with: v2, context: context)
        XCTAssertTrue(try kms.unwrap(edek2, with: v2, context: context).constantTimeEquals(secret2))
        XCTAssertEqual(expectError { try kms.unwrap(edek2, with: v1, context: context) }, .unwrapFailed(v1))

        XCTAssertEqual(try kms.createVersion(of: v1.keyID).version, 3)
        XCTAssertEqual(try kms.state(of: v1), .enabled)
        XCTAssertEqual(try kms.state(of: v2), .enabled)
        // A fresh instance (a restart) still unwraps v1.
        let restarted = try SimulatedKMS(directory: dir, create: false)
        XCTAssertTrue(try restarted.unwrap(edek1, with: v1, context: context).constantTimeEquals(secret1))
    }

    func testDisableAndReenable() throws {
        let kms = try kms()
        let v1 = try kms.createKey()
        let v2 = try kms.createVersion(of: v1.keyID)
        let context = WrapContext(volumeID: volumeA, fileID: file1)
        let secret = try dek()
        let edek = try kms.wrap(secret, with: v1, context: context)

        try kms.setState(.disabled, of: v1)
        XCTAssertEqual(try kms.state(of: v1), .disabled)
        XCTAssertEqual(expectError { try kms.wrap(secret, with: v1, context: context) }, .keyDisabled(v1))
        XCTAssertEqual(expectError { try kms.unwrap(edek, with: v1, context: context) }, .keyDisabled(v1))
        // Other versions are unaffected.
        XCTAssertEqual(try kms.state(of: v2), .enabled)
        XCTAssertNoThrow(try kms.wrap(secret, with: v2, context: context))
        // Disabling twice is fine; a restart keeps it disabled.
        try kms.setState(.disabled, of: v1)
        XCTAssertEqual(try SimulatedKMS(directory: dir, create: false).state(of: v1), .disabled)

        try kms.setState(.enabled, of: v1)
        XCTAssertEqual(try kms.state(of: v1), .enabled)
        XCTAssertTrue(try kms.unwrap(edek, with: v1, context: context).constantTimeEquals(secret))
        XCTAssertNoThrow(try kms.wrap(secret, with: v1, context: context))
    }

    func testDestroyIsPermanent() throws {
        let kms = try kms()
        let v1 = try kms.createKey()
        let v2 = try kms.createVersion(of: v1.keyID)
        let context = WrapContext(volumeID: volumeA, fileID: file1)
        let secret = try dek()
        let edek = try kms.wrap(secret, with: v1, context: context)
        let edek2 = try kms.wrap(secret, with: v2, context: context)
        let master = try masterKey(v1)

        try kms.setState(.destroyed, of: v1)
        XCTAssertEqual(try kms.state(of: v1), .destroyed)
        XCTAssertEqual(expectError { try kms.unwrap(edek, with: v1, context: context) }, .keyDestroyed(v1))
        XCTAssertEqual(expectError { try kms.wrap(secret, with: v1, context: context) }, .keyDestroyed(v1))
        XCTAssertEqual(expectError { try kms.setState(.enabled, of: v1) }, .keyDestroyed(v1))
        XCTAssertEqual(expectError { try kms.setState(.disabled, of: v1) }, .keyDestroyed(v1))
        XCTAssertEqual(try kms.state(of: v1), .destroyed)
        XCTAssertEqual(expectError { try kms.unwrap(edek, with: v1, context: context) }, .keyDestroyed(v1))
        // The key material is gone from the key file.
        XCTAssertEqual(try masterKey(v1), [UInt8](repeating: 0, count: 32))
        let fileBytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: keyPath(v1))))
        XCTAssertFalse(fileBytes.indices.dropLast(31).contains { Array(fileBytes[$0..<($0 + 32)]) == master })
        // A restart does not bring it back; v2 still works.
        let restarted = try SimulatedKMS(directory: dir, create: false)
        XCTAssertEqual(expectError { try restarted.unwrap(edek, with: v1, context: context) }, .keyDestroyed(v1))
        XCTAssertEqual(expectError { try restarted.setState(.enabled, of: v1) }, .keyDestroyed(v1))
        XCTAssertTrue(try restarted.unwrap(edek2, with: v2, context: context).constantTimeEquals(secret))
        // Destroying again is idempotent.
        XCTAssertNoThrow(try kms.setState(.destroyed, of: v1))
    }

    func testSecondInstanceSeesChangesByTheFirst() throws {
        let first = try kms()
        let second = try SimulatedKMS(directory: dir, create: false)
        let key = try first.createKey()
        let context = WrapContext(volumeID: volumeA, fileID: file1)
        let secret = try dek()
        let edek = try first.wrap(secret, with: key, context: context)
        // The second instance loads (and caches) the key file.
        XCTAssertTrue(try second.unwrap(edek, with: key, context: context).constantTimeEquals(secret))
        XCTAssertEqual(try second.state(of: key), .enabled)

        for round in 0..<3 {
            try first.setState(.disabled, of: key)
            XCTAssertEqual(try second.state(of: key), .disabled, "round \(round)")
            XCTAssertEqual(expectError { try second.unwrap(edek, with: key, context: context) }, .keyDisabled(key))
            try first.setState(.enabled, of: key)
            XCTAssertEqual(try second.state(of: key), .enabled, "round \(round)")
            XCTAssertTrue(try second.unwrap(edek, with: key, context: context).constantTimeEquals(secret))
        }
        // Changes flow the other way as well.
        let v2 = try second.createVersion(of: key.keyID)
        let edek2 = try second.wrap(secret, with: v2, context: context)
        XCTAssertTrue(try first.unwrap(edek2, with: v2, context: context).constantTimeEquals(secret))
        try second.setState(.destroyed, of: key)
        XCTAssertEqual(expectError { try first.unwrap(edek, with: key, context: context) }, .keyDestroyed(key))
    }

    /// An unwrap reads its key file through a descriptor kept from the call before, while the
    /// path still names that inode: a file changed in place behind it is read as it is now
    /// (damaged: refused), and one replaced by another process (a new inode) is opened afresh.
    func testUnwrapReadsTheKeyFileAsItIsNowThroughTheKeptDescriptor() throws {
        let kms = try kms()
        let other = try SimulatedKMS(directory: dir, create: false)
        let key = try kms.createKey()
        let context = WrapContext(volumeID: volumeA, fileID: file1)
        let secret = try dek()
        let edek = try kms.wrap(secret, with: key, context: context)
        XCTAssertTrue(try kms.unwrap(edek, with: key, context: context).constantTimeEquals(secret))
        let good = try Data(contentsOf: URL(fileURLWithPath: keyPath(key)))
        let inode = try FileManager.default.attributesOfItem(atPath: keyPath(key))[.systemFileNumber] as? Int
        // Damaged in place (the same inode, the same size): the next unwrap reads the damage.
        var damaged = [UInt8](good); damaged[12 + 16] ^= 0xFF
        let fd = open(keyPath(key), O_WRONLY)
        XCTAssertGreaterThanOrEqual(fd, 0)
        XCTAssertEqual(damaged.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }, damaged.count)
        close(fd)
        XCTAssertEqual(try FileManager.default.attributesOfItem(atPath: keyPath(key))[.systemFileNumber] as? Int, inode)
        XCTAssertEqual(expectError { try kms.unwrap(edek, with: key, context: context) }, .unwrapFailed(key))
        let restore = open(keyPath(key), O_WRONLY)
        XCTAssertEqual(good.withUnsafeBytes { pwrite(restore, $0.baseAddress, $0.count, 0) }, good.count)
        close(restore)
        XCTAssertTrue(try kms.unwrap(edek, with: key, context: context).constantTimeEquals(secret))
        // Disabled by another instance (a new file renamed over it): refused at once, and
        // usable again once enabled.
        try other.setState(.disabled, of: key)
        XCTAssertEqual(expectError { try kms.unwrap(edek, with: key, context: context) }, .keyDisabled(key))
        try other.setState(.enabled, of: key)
        XCTAssertTrue(try kms.unwrap(edek, with: key, context: context).constantTimeEquals(secret))
        // Removed: not found, as before.
        try FileManager.default.removeItem(atPath: keyPath(key))
        guard case .keyNotFound = expectError(body: { try kms.unwrap(edek, with: key, context: context) }) else {
            return XCTFail("an unwrap under a removed key file must be keyNotFound")
        }
    }

    // MARK: storage

    func testPermissions() throws {
        let nested = root + "/a/b/kms"
        let kms = try SimulatedKMS(directory: nested, create: true)
        var st = stat()
        XCTAssertEqual(stat(nested, &st), 0)
        XCTAssertEqual(st.st_mode & S_IFMT, S_IFDIR)
        XCTAssertEqual(st.st_mode & 0o7777, 0o700, "keystore directory mode")
        let key = try kms.createKey()
        XCTAssertEqual(stat("\(nested)/\(key.keyID).key", &st), 0)
        XCTAssertEqual(st.st_mode & S_IFMT, S_IFREG)
        XCTAssertEqual(st.st_mode & 0o7777, 0o600, "key file mode")
        XCTAssertEqual(st.st_size, 12 + 48)
        // Still 0600 after a rewrite, and no temporary file left behind.
        _ = try kms.createVersion(of: key.keyID)
        try kms.setState(.disabled, of: key)
        XCTAssertEqual(stat("\(nested)/\(key.keyID).key", &st), 0)
        XCTAssertEqual(st.st_mode & 0o7777, 0o600, "key file mode after rewrite")
        XCTAssertEqual(st.st_size, 12 + 2 * 48)
        XCTAssertNotEqual(access("\(nested)/\(key.keyID).key.tmp", F_OK), 0)
        // Opening an existing directory again works.
        XCTAssertNoThrow(try SimulatedKMS(directory: nested, create: false))
        XCTAssertNoThrow(try SimulatedKMS(directory: nested, create: true))
    }

    func testMissingDirectoryWithoutCreateIsUnavailable() throws {
        let missing = root + "/nope"
        guard case .unavailable? = expectError(body: { try SimulatedKMS(directory: missing, create: false) }) else {
            return XCTFail("expected unavailable")
        }
        XCTAssertNotEqual(access(missing, F_OK), 0, "create: false must not create it")
        // A regular file where the directory should be.
        let plain = root + "/plain"
        XCTAssertTrue(FileManager.default.createFile(atPath: plain, contents: Data([1])))
        guard case .unavailable? = expectError(body: { try SimulatedKMS(directory: plain, create: true) }) else {
            return XCTFail("expected unavailable for a regular file")
        }
    }

    func testMissingKeyIsKeyNotFound() throws {
        let kms = try kms()
        let ghost = KeyRef(keyID: "mk-0000000000000000", version: 1)
        let context = WrapContext(volumeID: volumeA, fileID: file1)
        let secret = try dek()
        assertKeyNotFound { try kms.state(of: ghost) }
        assertKeyNotFound { try kms.wrap(secret, with: ghost, context: context) }
        assertKeyNotFound { try kms.unwrap([UInt8](repeating: 1, count: 60), with: ghost, context: context) }
        assertKeyNotFound { try kms.createVersion(of: ghost.keyID) }
        assertKeyNotFound { try kms.setState(.disabled, of: ghost) }
        XCTAssertNotEqual(access("\(dir)/\(ghost.keyID).key", F_OK), 0, "a failed call must not create the key")
        // An existing key with a missing version.
        let key = try kms.createKey()
        let v9 = KeyRef(keyID: key.keyID, version: 9)
        assertKeyNotFound { try kms.state(of: v9) }
        assertKeyNotFound { try kms.wrap(secret, with: v9, context: context) }
        assertKeyNotFound { try kms.setState(.disabled, of: v9) }
        assertKeyNotFound { try kms.state(of: KeyRef(keyID: key.keyID, version: 0)) }
    }

    func testCorruptKeyFileIsCorrupt() throws {
        let kms = try kms()
        let key = try kms.createKey()
        let good = try Data(contentsOf: URL(fileURLWithPath: keyPath(key)))
        func replace(_ bytes: [UInt8], name: String) throws -> KeyRef {
            let ref = KeyRef(keyID: name, version: 1)
            // A new file (new inode), as a real corruption or a replacement would be.
            try Data(bytes).write(to: URL(fileURLWithPath: keyPath(ref)))
            return ref
        }
        var badMagic = [UInt8](good); badMagic[0] = UInt8(ascii: "X")
        var badFormat = [UInt8](good); badFormat[5] = 2
        var badState = [UInt8](good); badState[12 + 4] = 7
        var badCount = [UInt8](good); badCount[11] = 2
        let cases: [(String, [UInt8])] = [
            ("garbage", Array("this is not a key file at all, not even close".utf8)),
            ("empty", []),
            ("short", Array(good.prefix(11))),
            ("truncated", Array(good.dropLast())),
            ("extended", [UInt8](good) + [0]),
            ("bad-magic", badMagic),
            ("bad-format", badFormat),
            ("bad-state", badState),
            ("bad-count", badCount),
        ]
        let context = WrapContext(volumeID: volumeA, fileID: file1)
        for (name, bytes) in cases {
            let ref = try replace(bytes, name: "mk-\(name)")
            assertCorrupt(name) { try kms.state(of: ref) }
            assertCorrupt(name) { try kms.wrap(try self.dek(), with: ref, context: context) }
            assertCorrupt(name) { try kms.createVersion(of: ref.keyID) }
            assertCorrupt(name) { try kms.setState(.disabled, of: ref) }
        }
        // A loaded key whose file is later damaged: the reload notices.
        XCTAssertEqual(try kms.state(of: key), .enabled)
        var damaged = [UInt8](good); damaged[1] ^= 0xFF
        try Data(damaged + [0, 0, 0]).write(to: URL(fileURLWithPath: keyPath(key)))
        assertCorrupt("damaged after load") { try kms.state(of: key) }
        // Restoring the good bytes makes the key usable again.
        try Data(good).write(to: URL(fileURLWithPath: keyPath(key)))
        XCTAssertEqual(try kms.state(of: key), .enabled)
    }

    func testMalformedKeyIDsAreRefused() throws {
        let kms = try kms()
        let key = try kms.createKey()
        // A valid key file just outside the keystore, reachable by a ".." key id.
        let outside = root + "/evil.key"
        XCTAssertEqual(rename(keyPath(key), outside), 0)
        let before = try Data(contentsOf: URL(fileURLWithPath: outside))
        // And one in a subdirectory, reachable with a "/" in the id.
        try FileManager.default.createDirectory(atPath: dir + "/sub", withIntermediateDirectories: false)
        XCTAssertEqual(link(outside, dir + "/sub/inner.key"), 0)

        let context = WrapContext(volumeID: volumeA, fileID: file1)
        let secret = try dek()
        for id in ["../evil", "sub/inner", "/etc/passwd", "..", ".", "", "a/../b", "mk-1.key", "mk 1",
                   "mk-\u{0}", String(repeating: "a", count: 65), "../kms/\(key.keyID)"] {
            let ref = KeyRef(keyID: id, version: 1)
            assertKeyNotFound(id) { try kms.state(of: ref) }
            assertKeyNotFound(id) { try kms.wrap(secret, with: ref, context: context) }
            assertKeyNotFound(id) { try kms.unwrap([UInt8](repeating: 1, count: 60), with: ref, context: context) }
            assertKeyNotFound(id) { try kms.createVersion(of: id) }
            assertKeyNotFound(id) { try kms.setState(.disabled, of: ref) }
            assertKeyNotFound(id) { try kms.setState(.destroyed, of: ref) }
        }
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: outside)), before, "a key file outside the keystore was modified")
        XCTAssertNotEqual(access(root + "/evil.key.tmp", F_OK), 0)
        // The longest allowed id is fine as an id (it simply does not exist).
        assertKeyNotFound { try kms.state(of: KeyRef(keyID: String(repeating: "a", count: 64), version: 1)) }
    }

    func testErrorDescriptionsNameTheKeyButNoMaterial() throws {
        let kms = try kms()
        let key = try kms.createKey()
        let master = try masterKey(key)
        let masterHex = master.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
        try kms.setState(.disabled, of: key)
        let error = expectError { try kms.wrap(try self.dek(), with: key, context: WrapContext(volumeID: volumeA, fileID: file1)) }
        let text = error?.description ?? ""
        XCTAssertTrue(text.contains(key.keyID), text)
        XCTAssertFalse(text.contains(String(masterHex.prefix(8))), text)
    }
}
