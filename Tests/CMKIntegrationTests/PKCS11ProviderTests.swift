import Foundation
import XCTest
import CMKCrypto
import CMKKeys
import CMKPKCS11

/// What only the PKCS#11 provider does, against a real SoftHSM2 token (the contract itself is in
/// ProviderContractTests), and the PKCS#11 errors that can be produced in-process. SoftHSM reads
/// SOFTHSM2_CONF once per process (at C_Initialize), so these tests use the process's one token
/// directory (`SoftHSMTokens.inProcess`); each test uses its own master-key label.
final class PKCS11ProviderTests: ProviderTestCase {
    static let token = SoftHSMTokens.contractToken
    /// Never logged in by any test, so a wrong PIN meets C_Login for real.
    static let probeToken = SoftHSMTokens.probeToken

    static func pin(_ s: String = SoftHSMTokens.userPIN) -> SecretBytes { Array(s.utf8).withUnsafeBytes { SecretBytes(copying: $0) } }

    override func makeProvider() throws -> any KeyProvider {
        _ = try SoftHSMTokens.inProcess.get()
        return try PKCS11Provider(modulePath: SoftHSMTokens.module, tokenLabel: Self.token, pin: Self.pin())
    }

    var hsm: PKCS11Provider { provider as! PKCS11Provider }

    override func newKey() throws -> KeyRef { try hsm.createKey(named: "t-\(UUID().uuidString.prefix(8).lowercased())") }

    func testEDEKLayoutAndLabels() throws {
        let key = try newKey()
        XCTAssertEqual(PKCS11Provider.label(of: key), "\(key.keyID).v1")
        let edek = try provider.wrap(try dek(), with: key, context: WrapContext(volumeID: volumeA, fileID: file1))
        XCTAssertEqual(edek.count, 61, "01 ‖ 12-byte IV ‖ 32-byte ciphertext ‖ 16-byte tag")
        XCTAssertEqual(edek.first, 1)
        XCTAssertThrowsError(try hsm.createKey(named: key.keyID), "a label is never reused")
    }

    /// A second provider on the same token (another process in real life) sees the first one's keys.
    func testSecondProviderSharesTheToken() throws {
        let key = try newKey()
        let ctx = WrapContext(volumeID: volumeA, fileID: file1)
        let d = try dek()
        let edek = try provider.wrap(d, with: key, context: ctx)
        let other = try PKCS11Provider(modulePath: SoftHSMTokens.module, tokenLabel: Self.token, pin: Self.pin())
        XCTAssertTrue(try other.unwrap(edek, with: key, context: ctx).constantTimeEquals(d))
        try other.setState(.disabled, of: key)
        assertRefused("disabled through the other provider", Self.isDisabled) { _ = try provider.unwrap(edek, with: key, context: ctx) }
    }

    /// Another process makes the next version of a key; this process then writes an object of
    /// its own without searching the token first (the tombstone of another key, whose handle it
    /// holds; the mount's audit anchor is written the same way). SoftHSM2 (2.6.1) adopts the
    /// token's generation counter on every write, the other process's bump included, so a
    /// process that writes before it searches never re-reads the token directory: without
    /// cmkfs's token-write lock this one no longer saw the new version (a mount then failed
    /// every file wrapped under it until remounted; `SecretsInLogsTests` met it in CI).
    func testAVersionAnotherProcessMadeStaysVisibleAfterThisProcessWrites() throws {
        let key = try newKey()
        let bystander = try newKey()
        XCTAssertEqual(try hsm.state(of: bystander), .enabled, "its handle is cached: no search before its destroy")
        let dir = NSTemporaryDirectory() + "cmkfs-p11-rotate-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o700])
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try SoftHSMTokens.writePINFile(dir + "/pin")
        let r = Shell.run(KMSProcess.binary, ["key", "rotate", key.keyID, "--pkcs11-module", SoftHSMTokens.module, "--token", Self.token,
                                              "--pin-file", dir + "/pin", "--kms-dir", dir + "/kms"],
                          timeout: 60, logDir: dir, label: "cmkfs-kms key rotate (another process)")
        XCTAssertTrue(r.succeeded, "\(r)")
        try hsm.setState(.destroyed, of: bystander)
        let v2 = KeyRef(keyID: key.keyID, version: 2)
        XCTAssertEqual(try hsm.state(of: v2), .enabled, "the version the other process made")
        let ctx = WrapContext(volumeID: volumeA, fileID: file1)
        let d = try dek()
        XCTAssertTrue(try hsm.unwrap(try hsm.wrap(d, with: v2, context: ctx), with: v2, context: ctx).constantTimeEquals(d))
    }

    // MARK: opening errors

    private func assertOpenFails(_ expected: PKCS11OpenError, module: String = SoftHSMTokens.module, token: String,
                                 pin: String = SoftHSMTokens.userPIN, file: StaticString = #filePath, line: UInt = #line) {
        do {
            _ = try PKCS11Provider(modulePath: module, tokenLabel: token, pin: Self.pin(pin))
            XCTFail("expected \(expected)", file: file, line: line)
        } catch {
            XCTAssertEqual(error, expected, file: file, line: line)
            XCTAssertFalse(error.hint.isEmpty, file: file, line: line)
            XCTAssertFalse(error.message.contains("\n"), file: file, line: line)
        }
    }

    func testWrongPIN() {
        assertOpenFails(.pinIncorrect(token: Self.probeToken), token: Self.probeToken, pin: "0000")
        XCTAssertTrue(PKCS11OpenError.pinIncorrect(token: "t").message.contains("CKR_PIN_INCORRECT"))
    }

    func testTokenNotFound() {
        assertOpenFails(.tokenNotFound(label: "no-such-token", available: [Self.token, Self.probeToken].sorted()), token: "no-such-token")
    }

    func testMissingAndInvalidModule() throws {
        assertOpenFails(.moduleMissing(path: scratch + "/nope.so"), module: scratch + "/nope.so", token: Self.token)
        let fake = scratch + "/fake.so"
        try "not a library".write(toFile: fake, atomically: true, encoding: .utf8)
        do {
            _ = try PKCS11Provider(modulePath: fake, tokenLabel: Self.token, pin: Self.pin())
            XCTFail("a text file loaded as a module")
        } catch {
            guard case .moduleInvalid = error else { return XCTFail("\(error)") }
        }
    }

    /// SoftHSM never locks a PIN, so the mapping of C_Login's other answers is checked as pure logic.
    func testLoginReturnValueMapping() {
        XCTAssertEqual(PKCS11OpenError.login(rv: 0xA0, token: "t"), .pinIncorrect(token: "t"))
        XCTAssertEqual(PKCS11OpenError.login(rv: 0xA2, token: "t"), .pinIncorrect(token: "t"))
        XCTAssertEqual(PKCS11OpenError.login(rv: 0xA4, token: "t"), .pinLocked(token: "t"))
        XCTAssertEqual(PKCS11OpenError.login(rv: 0xA3, token: "t"), .pinExpired(token: "t"))
        XCTAssertTrue(PKCS11OpenError.pinLocked(token: "t").message.contains("CKR_PIN_LOCKED"))
        guard case .failed(_, let call) = PKCS11OpenError.login(rv: 0x30, token: "t") else { return XCTFail() }
        XCTAssertTrue(call.contains("0x30"), call)
    }
}
