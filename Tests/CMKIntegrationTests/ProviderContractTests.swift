import Foundation
import XCTest
import CMKCrypto
import CMKKeys
import CMKPKCS11
import CMKSocketKMS

/// The key-provider contract every provider passes against the real thing: the in-process
/// simulated KMS, a `cmkfs-kms` process over its socket, and a SoftHSM2 token.
///
/// The checks live here as `contract…` methods; each provider's subclass runs every one of them
/// as its own test (XCTest on Linux does not discover inherited test methods).
class ProviderContractCase: XCTestCase {
    var provider: (any KeyProvider)!
    var scratch: String!

    let volumeA: [UInt8] = Array(repeating: 0xA1, count: 16)
    let volumeB: [UInt8] = Array(repeating: 0xB2, count: 16)
    let file1: [UInt8] = Array(0..<16)
    let file2: [UInt8] = Array(16..<32)

    /// The provider under test; called in setUp after `scratch` exists.
    func makeProvider() throws -> any KeyProvider { throw FixtureError("subclass must override makeProvider") }

    /// A new master key for one test (the PKCS#11 token is shared by the class, so names differ).
    func newKey() throws -> KeyRef { try provider.createKey() }

    override func setUpWithError() throws {
        try super.setUpWithError()
        scratch = "/tmp/cmkfs-pc-\(UUID().uuidString.prefix(8).lowercased())"
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o700])
        provider = try makeProvider()
    }

    override func tearDown() {
        provider = nil
        if let scratch { try? FileManager.default.removeItem(atPath: scratch) }
        super.tearDown()
    }

    func dek() throws -> SecretBytes { try SecretBytes.random(count: 32) }

    func bytes(_ s: SecretBytes) -> [UInt8] { s.withUnsafeBytes { Array($0) } }

    /// Asserts `body` throws a `KeyProviderError` accepted by `matches`.
    func assertRefused(_ what: String, file: StaticString = #filePath, line: UInt = #line,
                       _ matches: (KeyProviderError) -> Bool, _ body: () throws -> Void) {
        do {
            try body()
            XCTFail("\(what): expected a refusal, got success", file: file, line: line)
        } catch let error as KeyProviderError {
            XCTAssertTrue(matches(error), "\(what): unexpected \(error)", file: file, line: line)
        } catch {
            XCTFail("\(what): expected a KeyProviderError, got \(error)", file: file, line: line)
        }
    }

    static func isDisabled(_ e: KeyProviderError) -> Bool { if case .keyDisabled = e { return true }; return false }
    static func isDestroyed(_ e: KeyProviderError) -> Bool { if case .keyDestroyed = e { return true }; return false }
    static func isUnwrapFailed(_ e: KeyProviderError) -> Bool { if case .unwrapFailed = e { return true }; return false }
    static func isNotFound(_ e: KeyProviderError) -> Bool { if case .keyNotFound = e { return true }; return false }
    static func isUnavailable(_ e: KeyProviderError) -> Bool { if case .unavailable = e { return true }; return false }

    // MARK: the contract

    func contractRoundTrip() throws {
        let key = try newKey()
        XCTAssertEqual(key.version, 1)
        XCTAssertEqual(try provider.state(of: key), .enabled)
        let d = try dek()
        let ctx = WrapContext(volumeID: volumeA, fileID: file1)
        let e1 = try provider.wrap(d, with: key, context: ctx)
        let e2 = try provider.wrap(d, with: key, context: ctx)
        XCTAssertNotEqual(e1, e2, "each wrap uses a fresh IV")
        let raw = bytes(d)
        XCTAssertFalse(e1.indices.contains { i in i + 32 <= e1.count && Array(e1[i..<(i + 32)]) == raw }, "the DEK shows in the EDEK")
        XCTAssertTrue(try provider.unwrap(e1, with: key, context: ctx).constantTimeEquals(d))
        XCTAssertTrue(try provider.unwrap(e2, with: key, context: ctx).constantTimeEquals(d))
    }

    func contractBinding() throws {
        let key = try newKey()
        let d = try dek()
        let edek = try provider.wrap(d, with: key, context: WrapContext(volumeID: volumeA, fileID: file1))
        assertRefused("another file id", Self.isUnwrapFailed) {
            _ = try provider.unwrap(edek, with: key, context: WrapContext(volumeID: volumeA, fileID: file2))
        }
        assertRefused("another volume id", Self.isUnwrapFailed) {
            _ = try provider.unwrap(edek, with: key, context: WrapContext(volumeID: volumeB, fileID: file1))
        }
        for i in [0, edek.count / 2, edek.count - 1] {
            var bad = edek
            bad[i] ^= 0x01
            assertRefused("EDEK with byte \(i) flipped", Self.isUnwrapFailed) {
                _ = try provider.unwrap(bad, with: key, context: WrapContext(volumeID: volumeA, fileID: file1))
            }
        }
        assertRefused("truncated EDEK", Self.isUnwrapFailed) {
            _ = try provider.unwrap(Array(edek.dropLast(5)), with: key, context: WrapContext(volumeID: volumeA, fileID: file1))
        }
        // The untouched EDEK still unwraps after all those refusals.
        XCTAssertTrue(try provider.unwrap(edek, with: key, context: WrapContext(volumeID: volumeA, fileID: file1)).constantTimeEquals(d))
    }

    func contractDisableAndReenable() throws {
        let key = try newKey()
        let ctx = WrapContext(volumeID: volumeA, fileID: file1)
        let d = try dek()
        let edek = try provider.wrap(d, with: key, context: ctx)
        try provider.setState(.disabled, of: key)
        XCTAssertEqual(try provider.state(of: key), .disabled)
        assertRefused("unwrap under a disabled key", Self.isDisabled) { _ = try provider.unwrap(edek, with: key, context: ctx) }
        assertRefused("wrap under a disabled key", Self.isDisabled) { _ = try provider.wrap(d, with: key, context: ctx) }
        try provider.setState(.enabled, of: key)
        XCTAssertEqual(try provider.state(of: key), .enabled)
        XCTAssertTrue(try provider.unwrap(edek, with: key, context: ctx).constantTimeEquals(d))
    }

    func contractVersions() throws {
        let v1 = try newKey()
        let v2 = try provider.createVersion(of: v1.keyID)
        XCTAssertEqual(v2, KeyRef(keyID: v1.keyID, version: 2))
        let ctx = WrapContext(volumeID: volumeA, fileID: file1)
        let d1 = try dek(), d2 = try dek()
        let e1 = try provider.wrap(d1, with: v1, context: ctx)
        let e2 = try provider.wrap(d2, with: v2, context: ctx)
        XCTAssertTrue(try provider.unwrap(e1, with: v1, context: ctx).constantTimeEquals(d1), "old version keeps working")
        XCTAssertTrue(try provider.unwrap(e2, with: v2, context: ctx).constantTimeEquals(d2))
        assertRefused("v1 EDEK under v2", Self.isUnwrapFailed) { _ = try provider.unwrap(e1, with: v2, context: ctx) }
        try provider.setState(.disabled, of: v1)
        assertRefused("disabled v1", Self.isDisabled) { _ = try provider.unwrap(e1, with: v1, context: ctx) }
        XCTAssertTrue(try provider.unwrap(e2, with: v2, context: ctx).constantTimeEquals(d2), "disabling v1 leaves v2 alone")
        let v3 = try provider.createVersion(of: v1.keyID)
        XCTAssertEqual(v3.version, 3)
        assertRefused("no version 9", Self.isNotFound) { _ = try provider.state(of: KeyRef(keyID: v1.keyID, version: 9)) }
    }

    func contractDestroy() throws {
        let v1 = try newKey()
        let v2 = try provider.createVersion(of: v1.keyID)
        let ctx = WrapContext(volumeID: volumeA, fileID: file1)
        let d = try dek()
        let e1 = try provider.wrap(d, with: v1, context: ctx)
        let e2 = try provider.wrap(d, with: v2, context: ctx)
        try provider.setState(.destroyed, of: v1)
        XCTAssertEqual(try provider.state(of: v1), .destroyed)
        assertRefused("unwrap under a destroyed key", Self.isDestroyed) { _ = try provider.unwrap(e1, with: v1, context: ctx) }
        assertRefused("wrap under a destroyed key", Self.isDestroyed) { _ = try provider.wrap(d, with: v1, context: ctx) }
        assertRefused("enable a destroyed key", Self.isDestroyed) { try provider.setState(.enabled, of: v1) }
        XCTAssertEqual(try provider.state(of: v1), .destroyed, "destroy is permanent")
        XCTAssertTrue(try provider.unwrap(e2, with: v2, context: ctx).constantTimeEquals(d), "v2 survives v1's destruction")
        XCTAssertEqual(try provider.createVersion(of: v1.keyID).version, 3, "a destroyed version's number is never reused")
    }

    func contractUnknownKey() throws {
        let ghost = KeyRef(keyID: "no-such-key-\(UUID().uuidString.prefix(6).lowercased())", version: 1)
        assertRefused("state of an unknown key", Self.isNotFound) { _ = try provider.state(of: ghost) }
        assertRefused("unwrap under an unknown key", Self.isNotFound) {
            _ = try provider.unwrap(Array(repeating: 1, count: 61), with: ghost, context: WrapContext(volumeID: volumeA, fileID: file1))
        }
    }

    /// The mount calls the provider from many FUSE threads at once.
    func contractConcurrentUnwraps() throws {
        let key = try newKey()
        let contexts = (0..<8).map { i in WrapContext(volumeID: volumeA, fileID: Array(repeating: UInt8(i), count: 16)) }
        var dekList: [SecretBytes] = [], edekList: [[UInt8]] = []
        for context in contexts {
            let d = try dek()
            dekList.append(d)
            edekList.append(try provider.wrap(d, with: key, context: context))
        }
        let deks = dekList, edeks = edekList
        let failures = ManagedAtomicCounter()
        let provider = self.provider!
        DispatchQueue.concurrentPerform(iterations: 8) { t in
            for i in 0..<50 {
                let n = (t + i) % 8
                if !Self.unwrapsTo(provider, edeks[n], key, contexts[n], deks[n]) { failures.add() }
            }
        }
        XCTAssertEqual(failures.value, 0)
    }

    static func unwrapsTo(_ provider: any KeyProvider, _ edek: [UInt8], _ key: KeyRef, _ context: WrapContext,
                          _ expected: SecretBytes) -> Bool {
        guard let got = try? provider.unwrap(edek, with: key, context: context) else { return false }
        return got.constantTimeEquals(expected)
    }
}

final class ManagedAtomicCounter: @unchecked Sendable {
    // Sound: `count` is only touched under `lock`.
    private let lock = NSLock()
    private var count = 0
    func add() { lock.lock(); count += 1; lock.unlock() }
    var value: Int { lock.lock(); defer { lock.unlock() }; return count }
}

// MARK: the in-process simulated KMS

final class EmbeddedProviderContractTests: ProviderContractCase {
    override func makeProvider() throws -> any KeyProvider { try SimulatedKMS(directory: scratch + "/kms", create: true) }

    func testRoundTrip() throws { try contractRoundTrip() }
    func testBinding() throws { try contractBinding() }
    func testDisableAndReenable() throws { try contractDisableAndReenable() }
    func testVersions() throws { try contractVersions() }
    func testDestroy() throws { try contractDestroy() }
    func testUnknownKey() throws { try contractUnknownKey() }
    func testConcurrentUnwraps() throws { try contractConcurrentUnwraps() }
}
