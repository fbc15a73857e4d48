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
