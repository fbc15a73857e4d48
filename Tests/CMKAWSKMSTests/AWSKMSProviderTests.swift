import Foundation
import Synchronization
import XCTest
import CMKCrypto
import CMKKeys
@testable import CMKAWSKMS

/// The provider's request building and answer mapping, over a scripted transport (the real
/// server runs in CMKIntegrationTests.AWSKMSTests).
final class AWSKMSProviderTests: XCTestCase {
    /// Answers from a script, recording what was sent.
    final class Scripted: AWSKMSTransport {
        let answers: Mutex<[Result<AWSKMSResponse, AWSKMSTransportError>]>
        let sent = Mutex<[(headers: [(name: String, value: String)], body: [UInt8])]>([])
        init(_ answers: [Result<AWSKMSResponse, AWSKMSTransportError>]) { self.answers = Mutex(answers) }
        func post(url: String, headers: [(name: String, value: String)], body: [UInt8]) throws(AWSKMSTransportError) -> AWSKMSResponse {
            sent.withLock { $0.append((headers, body)) }
            let next = answers.withLock { $0.isEmpty ? .failure(AWSKMSTransportError("script ran out")) : $0.removeFirst() }
            return try next.get()
        }
    }

    static func answer(_ status: Int, _ json: String, requestID: String = "req-1") -> Result<AWSKMSResponse, AWSKMSTransportError> {
        .success(AWSKMSResponse(status: status, headers: [(name: "x-amzn-requestid", value: requestID)], body: Array(json.utf8)))
    }

    let key = KeyRef(keyID: "alias/cmkfs", version: 3)
    let context = WrapContext(volumeID: Array(repeating: 0xAB, count: 16), fileID: Array(repeating: 0x01, count: 16))

    func provider(_ t: Scripted) throws -> AWSKMSProvider {
        let secret = Array("s3cr3t-not-for-logs".utf8).withUnsafeBytes { SecretBytes(copying: $0) }
        return try AWSKMSProvider(region: "eu-west-1", endpoint: "http://127.0.0.1:4566",
                                  credentials: AWSCredentials(accessKeyID: "AKIDTEST", secretAccessKey: secret, source: "test"),
                                  transport: t, attempts: 3, backoffMilliseconds: 1, clock: { 1_440_938_160 })
    }

    func testUnwrapSendsTheContextAndReadsThePlaintext() throws {
        let dek = Array(0..<32).map(UInt8.init)
        let t = Scripted([Self.answer(200, #"{"KeyId":"arn:x","Plaintext":"\#(Data(dek).base64EncodedString())","EncryptionAlgorithm":"SYMMETRIC_DEFAULT"}"#)])
        let p = try provider(t)
        var asked = context
        asked.request = KeyRequest(operation: "open")
        let got = try p.unwrap([1, 2, 3], with: key, context: asked)
        XCTAssertEqual(got.withUnsafeBytes { Array($0) }, dek)
        XCTAssertEqual(p.lastRequestID, "req-1")
        XCTAssertEqual(asked.request?.receipt.serverRequestID, "req-1", "AWS's request id joins CloudTrail to the audit record")
        let (headers, body) = t.sent.withLock { $0[0] }
        let sent = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(body)) as? [String: Any])
        XCTAssertEqual(sent["KeyId"] as? String, "alias/cmkfs")
        XCTAssertEqual(sent["CiphertextBlob"] as? String, Data([1, 2, 3]).base64EncodedString())
        XCTAssertEqual(sent["EncryptionContext"] as? [String: String],
                       ["cmkfs:volume": String(repeating: "ab", count: 16), "cmkfs:file": String(repeating: "01", count: 16), "cmkfs:key-version": "3"])
        XCTAssertEqual(headers.first { $0.name == "X-Amz-Target" }?.value, "TrentService.Decrypt")
        XCTAssertEqual(headers.first { $0.name == "Host" }?.value, "127.0.0.1:4566")
        let auth = try XCTUnwrap(headers.first { $0.name == "Authorization" }?.value)
        XCTAssertTrue(auth.hasPrefix("AWS4-HMAC-SHA256 Credential=AKIDTEST/20150830/eu-west-1/kms/aws4_request, "), auth)
        XCTAssertFalse(headers.contains { $0.value.contains("s3cr3t") })
    }

    func testWrapSendsThePlaintextInBase64AndReturnsTheBlob() throws {
        let t = Scripted([Self.answer(200, #"{"CiphertextBlob":"AQIDBA==","KeyId":"arn:x"}"#)])
        let dek = try SecretBytes.random(count: 32)
        XCTAssertEqual(try provider(t).wrap(dek, with: key, context: context), [1, 2, 3, 4])
        let body = t.sent.withLock { $0[0].body }
        let sent = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(body)) as? [String: Any])
        XCTAssertEqual((sent["Plaintext"] as? String).flatMap { Data(base64Encoded: $0) }.map(Array.init), dek.withUnsafeBytes { Array($0) })
    }

    func testReEncryptSendsBothContextsAndNoPlaintext() throws {
        let t = Scripted([Self.answer(200, #"{"CiphertextBlob":"BQYH","KeyId":"arn:x","SourceKeyId":"arn:x"}"#)])
        let to = KeyRef(keyID: key.keyID, version: 4)
        XCTAssertEqual(try provider(t).reEncrypt([1, 2], from: key, to: to, context: context), [5, 6, 7])
        let (headers, body) = t.sent.withLock { $0[0] }
        XCTAssertEqual(headers.first { $0.name == "X-Amz-Target" }?.value, "TrentService.ReEncrypt")
        let sent = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(body)) as? [String: Any])
        XCTAssertEqual((sent["SourceEncryptionContext"] as? [String: String])?["cmkfs:key-version"], "3")
        XCTAssertEqual((sent["DestinationEncryptionContext"] as? [String: String])?["cmkfs:key-version"], "4")
        XCTAssertEqual(sent["DestinationKeyId"] as? String, key.keyID)
        XCTAssertNil(sent["Plaintext"])
    }

    func testThrottlingIsRetriedThenSucceeds() throws {
        let t = Scripted([Self.answer(400, #"{"__type":"ThrottlingException","message":"Rate exceeded"}"#),
                          Self.answer(400, #"{"__type":"ThrottlingException","message":"Rate exceeded"}"#),
                          Self.answer(200, #"{"KeyMetadata":{"KeyId":"k","KeyState":"Enabled"}}"#)])
        XCTAssertEqual(try provider(t).state(of: key), .enabled)
        XCTAssertEqual(t.sent.withLock { $0.count }, 3)
    }

    func testThrottlingForeverIsUnavailableAfterTheAttempts() throws {
        let t = Scripted(Array(repeating: Self.answer(400, #"{"__type":"ThrottlingException","message":"Rate exceeded"}"#), count: 5))
        XCTAssertThrowsError(try provider(t).state(of: key)) { error in
            guard case KeyProviderError.unavailable(let why) = error else { return XCTFail("\(error)") }
            XCTAssertTrue(why.contains("ThrottlingException") && why.contains("3 attempts"), why)
        }
        XCTAssertEqual(t.sent.withLock { $0.count }, 3)
    }

    func testRefusalsMapToTheKillSwitchAndTheRest() throws {
        let cases: [(String, String, (KeyProviderError) -> Bool)] = [
            ("DisabledException", "", { if case .keyDisabled = $0 { return true }; return false }),
            ("com.amazonaws.kms#AccessDeniedException", "not authorized", { if case .accessDenied = $0 { return true }; return false }),
            ("KMSInvalidStateException", "arn:x is pending deletion.", { if case .keyDestroyed = $0 { return true }; return false }),
            ("KMSInvalidStateException", "arn:x is disabled.", { if case .keyDisabled = $0 { return true }; return false }),
            ("NotFoundException", "Invalid keyId", { if case .keyNotFound = $0 { return true }; return false }),
            ("InvalidCiphertextException", "", { if case .unwrapFailed = $0 { return true }; return false }),
            ("UnrecognizedClientException", "The security token included in the request is invalid.", {
                if case .unavailable(let why) = $0 { return why.contains("rejected the credentials") && why.contains("AKIDTEST") && !why.contains("s3cr3t") }
                return false
            }),
        ]
        for (type, message, matches) in cases {
            let t = Scripted([Self.answer(400, #"{"__type":"\#(type)","message":"\#(message)"}"#)])
            XCTAssertThrowsError(try provider(t).unwrap([9], with: key, context: context), type) { error in
                XCTAssertTrue(matches(error as! KeyProviderError), "\(type): \(error)")
            }
        }
    }

    func testNoAnswerIsUnavailable() throws {
        let t = Scripted([.failure(AWSKMSTransportError("Connection refused"))])
        XCTAssertThrowsError(try provider(t).state(of: key)) { error in
            guard case KeyProviderError.unavailable(let why) = error else { return XCTFail("\(error)") }
            XCTAssertTrue(why.contains("unreachable") && why.contains("Connection refused"), why)
        }
    }

    func testStatesAndVersions() throws {
        for (aws, ours) in [("Enabled", ProviderKeyState.enabled), ("Disabled", .disabled), ("PendingDeletion", .destroyed), ("PendingImport", .disabled)] {
            let t = Scripted([Self.answer(200, #"{"KeyMetadata":{"KeyId":"k","KeyState":"\#(aws)"}}"#)])
            XCTAssertEqual(try provider(t).state(of: key), ours, aws)
        }
        // The next version follows the newest one asked about; the key must be enabled.
        let t = Scripted([Self.answer(200, #"{"KeyMetadata":{"KeyId":"k","KeyState":"Enabled"}}"#),
                          Self.answer(200, #"{"KeyMetadata":{"KeyId":"k","KeyState":"Enabled"}}"#)])
        let p = try provider(t)
        XCTAssertEqual(try p.state(of: key), .enabled)
        XCTAssertEqual(try p.createVersion(of: key.keyID), KeyRef(keyID: key.keyID, version: 4))
        XCTAssertFalse(p.versionsAreSeparateKeys)
    }

    func testBase64Helpers() {
        for n in [1, 2, 3, 31, 32, 33] {
            let bytes = (0..<n).map { UInt8($0 * 7 & 0xFF) }
            let literal = KMSJSON.base64Literal(bytes)
            XCTAssertEqual(String(decoding: literal, as: UTF8.self), "\"\(Data(bytes).base64EncodedString())\"")
            let decoded = KMSJSON.decodeSecret(Array(literal.dropFirst().dropLast()))
            XCTAssertEqual(decoded?.withUnsafeBytes { Array($0) }, bytes, "\(n)")
        }
        XCTAssertNil(KMSJSON.decodeSecret(Array("abc".utf8)))
        XCTAssertEqual(Array("\\/".utf8).count, 2)
        XCTAssertEqual(Array("{\"Plaintext\" : \"QQ\\/=\"}".utf8).withUnsafeBytes { KMSJSON.stringField("Plaintext", in: $0) }, Array("QQ/=".utf8))
    }
}
