import Foundation
import XCTest
import CMKAWSKMS
import CMKCrypto
import CMKHTTP
import CMKKeys
import CMKPKCS11
import CMKSocketKMS
import CMKVault

/// The key-provider contract, one parameterised suite: every test runs its check against each
/// provider for real (`ContractProvider`): the in-process simulated KMS, a `cmkfs-kms` process
/// over its socket, a SoftHSM2 token, and an OpenBao dev server's transit engine. A failure names the provider it came from. What only
/// one provider can do is tested beside it (SocketKMSTests, PKCS11ProviderTests).
final class ProviderContractTests: XCTestCase {
    func testRoundTrip() { forEachProvider { try $0.roundTrip() } }
    func testBinding() { forEachProvider { try $0.binding() } }
    func testDisableAndReenable() { forEachProvider { try $0.disableAndReenable() } }
    func testVersions() { forEachProvider { try $0.versions() } }
    func testDestroy() { forEachProvider { try $0.destroy() } }
    func testUnknownKey() { forEachProvider { try $0.unknownKey() } }
    func testConcurrentUnwraps() { forEachProvider { try $0.concurrentUnwraps() } }

    /// Runs `check` against a fresh instance of every provider, each in a scratch directory of
    /// its own, and stops what it started even when the check fails.
    func forEachProvider(_ check: (ProviderContract) throws -> Void) {
        for kind in ContractProvider.allCases {
            let failuresBefore = testRun?.totalFailureCount ?? 0
            let scratch = "/tmp/cmkfs-pc-\(UUID().uuidString.prefix(8).lowercased())"
            do {
                try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: false,
                                                        attributes: [.posixPermissions: 0o700])
                defer { try? FileManager.default.removeItem(atPath: scratch) }
                let (contract, stop) = try kind.start(in: scratch)
                defer { if let problem = stop() { XCTFail("\(kind.rawValue): \(problem)") } }
                try check(contract)
            } catch {
                XCTFail("\(kind.rawValue): \(error)")
            }
            if (testRun?.totalFailureCount ?? 0) > failuresBefore {
                XCTFail("the failures above came from the \(kind.rawValue)")
            }
        }
    }
}

/// The providers the contract runs against.
enum ContractProvider: String, CaseIterable {
    case embedded = "embedded simulated KMS"
    case socket = "cmkfs-kms socket KMS"
    case pkcs11 = "PKCS#11 provider on SoftHSM2"
    case socketOnToken = "cmkfs-kms socket KMS in front of a SoftHSM2 token"
    case awsKMS = "AWS KMS provider on moto_server behind the fault layer"
    case vault = "Vault transit provider on OpenBao"

    /// A fresh provider, with whatever it needs made in `scratch`, and how to stop it (which
    /// returns a problem, if any).
    func start(in scratch: String) throws -> (ProviderContract, stop: () -> String?) {
        switch self {
        case .embedded:
            let kms = try SimulatedKMS(directory: scratch + "/kms", create: true)
            return (ProviderContract(kms), { nil })
        case .socket:
            let kms = KMSProcess(socket: scratch + "/kms.sock", state: scratch + "/state", logPath: scratch + "/kms.log")
            try kms.start()
            return (ProviderContract(SocketKMSProvider(socketPath: kms.socket, timeoutMilliseconds: 1000)), { kms.stop() })
        case .pkcs11:
            let tokens = try SoftHSMTokens.inProcess.get()
            let hsm = try PKCS11Provider(modulePath: SoftHSMTokens.module, tokenLabel: SoftHSMTokens.contractToken, pin: tokens.pin())
            // The token is shared by the process: each key gets a label of its own.
            return (ProviderContract(hsm) { try hsm.createKey(named: "t-\(UUID().uuidString.prefix(8).lowercased())") }, { nil })
        case .socketOnToken:
            let kms = try KMSProcess.onToken(socket: scratch + "/kms.sock", state: scratch + "/state", logPath: scratch + "/kms.log",
                                             root: scratch + "/hsm", logDir: scratch)
            try kms.start()
            return (ProviderContract(SocketKMSProvider(socketPath: kms.socket, timeoutMilliseconds: 5000)), { kms.stop() })
        case .awsKMS:
            let server = AWSKMSServer(logDir: scratch)
            do { try server.start() } catch { server.stop(); throw error }
            return (ProviderContract(try server.provider()), { server.stop() })
        case .vault:
            // The process's one OpenBao server; each key gets a name of its own.
            let bao = try OpenBaoServer.shared.get()
            let settings = VaultSettings(address: bao.address)
            let vault = try VaultTransitProvider(settings: settings, keyName: "unused", token: OpenBaoServer.secret())
            return (ProviderContract(vault) {
                try VaultTransitProvider(settings: settings, keyName: "t-\(UUID().uuidString.prefix(8).lowercased())",
                                         token: OpenBaoServer.secret()).createKey()
            }, { nil })
        }
    }
}

/// What every test of a key provider uses: fixed volume and file ids, fresh DEKs, refusal checks.
protocol ProviderChecks {
    var provider: (any KeyProvider)! { get }
    /// A new master key for one test.
    func newKey() throws -> KeyRef
}

extension ProviderChecks {
    var volumeA: [UInt8] { Array(repeating: 0xA1, count: 16) }
    var volumeB: [UInt8] { Array(repeating: 0xB2, count: 16) }
    var file1: [UInt8] { Array(0..<16) }
    var file2: [UInt8] { Array(16..<32) }

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
    /// The token or credentials refused, saying so (Vault's 403, AWS's AccessDeniedException).
    static func isDenied(_ e: KeyProviderError) -> Bool { if case .accessDenied = e { return true }; return false }
    static func isDestroyed(_ e: KeyProviderError) -> Bool { if case .keyDestroyed = e { return true }; return false }
    static func isUnwrapFailed(_ e: KeyProviderError) -> Bool { if case .unwrapFailed = e { return true }; return false }
    static func isNotFound(_ e: KeyProviderError) -> Bool { if case .keyNotFound = e { return true }; return false }
    static func isUnavailable(_ e: KeyProviderError) -> Bool { if case .unavailable = e { return true }; return false }
}

/// A provider's own tests (beyond the contract): a fresh provider per test from `makeProvider`,
/// in a scratch directory removed in tearDown.
class ProviderTestCase: XCTestCase, ProviderChecks {
    var provider: (any KeyProvider)!
    var scratch: String!

    /// The provider under test; called in setUp after `scratch` exists.
    func makeProvider() throws -> any KeyProvider { throw FixtureError("subclass must override makeProvider") }

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
}

/// The contract's checks against one provider.
final class ProviderContract: ProviderChecks {
    let provider: (any KeyProvider)!
    private let makeKey: () throws -> KeyRef

    init(_ provider: any KeyProvider, newKey: (() throws -> KeyRef)? = nil) {
        self.provider = provider
        self.makeKey = newKey ?? { try provider.createKey() }
    }

    func newKey() throws -> KeyRef { try makeKey() }

    func roundTrip() throws {
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

    func binding() throws {
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

    func disableAndReenable() throws {
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

    func versions() throws {
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
        guard provider.versionsAreSeparateKeys else {
            // One provider key under every version (AWS KMS): disabling one disables them all.
            try provider.setState(.disabled, of: v1)
            assertRefused("disabled v1", Self.isDisabled) { _ = try provider.unwrap(e1, with: v1, context: ctx) }
            assertRefused("v2 shares v1's key", Self.isDisabled) { _ = try provider.unwrap(e2, with: v2, context: ctx) }
            try provider.setState(.enabled, of: v2)
            XCTAssertEqual(try provider.createVersion(of: v1.keyID).version, 3)
            XCTAssertTrue(try provider.unwrap(e1, with: v1, context: ctx).constantTimeEquals(d1), "old version decrypts again")
            return
        }
        try provider.setState(.disabled, of: v1)
        assertRefused("disabled v1", Self.isDisabled) { _ = try provider.unwrap(e1, with: v1, context: ctx) }
        XCTAssertTrue(try provider.unwrap(e2, with: v2, context: ctx).constantTimeEquals(d2), "disabling v1 leaves v2 alone")
        let v3 = try provider.createVersion(of: v1.keyID)
        XCTAssertEqual(v3.version, 3)
        assertRefused("no version 9", Self.isNotFound) { _ = try provider.state(of: KeyRef(keyID: v1.keyID, version: 9)) }
    }

    func destroy() throws {
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
        guard provider.versionsAreSeparateKeys else {
            // One provider key under every version: destroying one destroys them all.
            assertRefused("v2 shares v1's key", Self.isDestroyed) { _ = try provider.unwrap(e2, with: v2, context: ctx) }
            assertRefused("no new version of a destroyed key", Self.isDestroyed) { _ = try provider.createVersion(of: v1.keyID) }
            return
        }
        XCTAssertTrue(try provider.unwrap(e2, with: v2, context: ctx).constantTimeEquals(d), "v2 survives v1's destruction")
        XCTAssertEqual(try provider.createVersion(of: v1.keyID).version, 3, "a destroyed version's number is never reused")
    }

    func unknownKey() throws {
        let ghost = KeyRef(keyID: "no-such-key-\(UUID().uuidString.prefix(6).lowercased())", version: 1)
        assertRefused("state of an unknown key", Self.isNotFound) { _ = try provider.state(of: ghost) }
        assertRefused("unwrap under an unknown key", Self.isNotFound) {
            _ = try provider.unwrap(Array(repeating: 1, count: 61), with: ghost, context: WrapContext(volumeID: volumeA, fileID: file1))
        }
    }

    /// The mount calls the provider from many FUSE threads at once.
    func concurrentUnwraps() throws {
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
        let provider: any KeyProvider = self.provider
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
