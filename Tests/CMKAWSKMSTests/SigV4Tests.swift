import XCTest
import CMKCrypto
@testable import CMKAWSKMS

/// The signer against AWS's published Signature Version 4 test suite (aws-sig-v4-test-suite):
/// the example credentials, 2015-08-30T12:36:00Z, us-east-1, service "service". Each case
/// checks the canonical request or the hash of it in the string to sign, and the signature.
final class SigV4Tests: XCTestCase {
    static let when = 1_440_938_160
    static let emptyHash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    let signer = SigV4Signer(region: "us-east-1", service: "service")

    func credentials(token: String? = nil) -> AWSCredentials {
        AWSCredentials(accessKeyID: "AKIDEXAMPLE",
                       secretAccessKey: Array("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".utf8).withUnsafeBytes { SecretBytes(copying: $0) },
                       sessionToken: token, source: "the test suite")
    }

    func sign(_ method: String, _ path: String = "/", query: [(name: String, value: String)] = [],
              headers: [(name: String, value: String)] = [], body: String = "", token: String? = nil) throws -> SigV4Signature {
        let request = SigV4Request(method: method, path: path, query: query,
                                   headers: [(name: "Host", value: "example.amazonaws.com")] + headers, body: Array(body.utf8))
        return try signer.sign(request, credentials: credentials(token: token), date: Self.when)
    }

    func stsHash(_ s: SigV4Signature) -> String { String(s.stringToSign.split(separator: "\n").last ?? "") }

    func testGetVanilla() throws {
        let s = try sign("GET")
        XCTAssertEqual(s.canonicalRequest, "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n\(Self.emptyHash)")
        XCTAssertEqual(s.stringToSign, "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\n"
                       + "bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63")
        XCTAssertEqual(s.authorization, "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
                       + "SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31")
        XCTAssertEqual(s.headers.first { $0.name == "X-Amz-Date" }?.value, "20150830T123600Z")
    }

    func testGetVanillaQueryOrderKeyCase() throws {
        let s = try sign("GET", query: [("Param2", "value2"), ("Param1", "value1")])
        XCTAssertEqual(s.canonicalRequest.split(separator: "\n", omittingEmptySubsequences: false)[2], "Param1=value1&Param2=value2")
        XCTAssertEqual(stsHash(s), "816cd5b414d056048ba4f7c5386d6e0533120fb1fcfa93762cf0fc39e2cf19e0")
        XCTAssertEqual(s.signature, "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500")
    }

    func testGetUTF8Path() throws {
        let s = try sign("GET", "/\u{1234}")
        XCTAssertEqual(s.canonicalRequest.split(separator: "\n")[1], "/%E1%88%B4")
        XCTAssertEqual(stsHash(s), "2a0a97d02205e45ce2e994789806b19270cfbbb0921b278ccf58f5249ac42102")
        XCTAssertEqual(s.signature, "8318018e0b0f223aa2bbf98705b62bb787dc9c0e678f255a891fd03141be5d85")
    }

    func testGetVanillaUTF8Query() throws {
        let s = try sign("GET", query: [("\u{1234}", "bar")])
        XCTAssertEqual(s.canonicalRequest.split(separator: "\n", omittingEmptySubsequences: false)[2], "%E1%88%B4=bar")
        XCTAssertEqual(s.signature, "2cdec8eed098649ff3a119c94853b13c643bcf08f8b0a1d91e12c9027818dd04")
    }

    func testGetUnreserved() throws {
        let s = try sign("GET", "/-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
        XCTAssertEqual(stsHash(s), "6a968768eefaa713e2a6b16b589a8ea192661f098f37349f4e2c0082757446f9")
        XCTAssertEqual(s.signature, "07ef7494c76fa4850883e2b006601f940f8a34d404d0cfa977f52a65bbf5f24f")
    }

    func testGetHeaderValueTrim() throws {
        let s = try sign("GET", headers: [("My-Header1", " value1"), ("My-Header2", " \"a   b   c\"")])
        XCTAssertEqual(s.canonicalRequest, "GET\n/\n\nhost:example.amazonaws.com\nmy-header1:value1\nmy-header2:\"a b c\"\n"
                       + "x-amz-date:20150830T123600Z\n\nhost;my-header1;my-header2;x-amz-date\n\(Self.emptyHash)")
        XCTAssertEqual(stsHash(s), "a726db9b0df21c14f559d0a978e563112acb1b9e05476f0a6a1c7d68f28605c7")
        XCTAssertEqual(s.signature, "acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736")
    }

    func testGetHeaderKeyDuplicate() throws {
        let s = try sign("GET", headers: [("My-Header1", "value2"), ("My-Header1", "value2"), ("My-Header1", "value1")])
        XCTAssertTrue(s.canonicalRequest.contains("\nmy-header1:value2,value2,value1\n"), s.canonicalRequest)
        XCTAssertEqual(s.signature, "c9d5ea9f3f72853aea855b47ea873832890dbdd183b4468f858259531a5138ea")
    }

    func testPostVanilla() throws {
        let s = try sign("POST")
        XCTAssertEqual(stsHash(s), "553f88c9e4d10fc9e109e2aeb65f030801b70c2f6468faca261d401ae622fc87")
        XCTAssertEqual(s.signature, "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b")
    }

    func testPostHeaderValueCase() throws {
        let s = try sign("POST", headers: [("My-Header1", "VALUE1")])
        XCTAssertEqual(s.signature, "cdbc9802e29d2942e5e10b5bccfdd67c5f22c7c4e8ae67b53629efa58b974b7d")
    }

    func testPostXWWWFormURLEncoded() throws {
        let s = try sign("POST", headers: [("Content-Type", "application/x-www-form-urlencoded")], body: "Param1=value1")
        XCTAssertEqual(s.canonicalRequest, "POST\n/\n\ncontent-type:application/x-www-form-urlencoded\nhost:example.amazonaws.com\n"
                       + "x-amz-date:20150830T123600Z\n\ncontent-type;host;x-amz-date\n"
                       + "9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e")
        XCTAssertEqual(stsHash(s), "42a5e5bb34198acb3e84da4f085bb7927f2bc277ca766e6d19c73c2154021281")
        XCTAssertEqual(s.authorization, "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
                       + "SignedHeaders=content-type;host;x-amz-date, Signature=ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a")
    }

    /// post-sts-header-before: the session token is sent as X-Amz-Security-Token and signed.
    func testPostSessionTokenSigned() throws {
        let token = "AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFqwAeMicRXmxfpSPfIeoIYRqTflfKD8YUuwthAx7mSEI/qkPpKPi/kMcGdQrmGdeehM4IC1NtBmUpp2wUE8phUZampKsburEDy0KPkyQDYwT7WZ0wq5VSXDvp75YU9HFvlRd8Tx6q6fE8YQcHNVXAkiY9q6d+xo0rKwT38xVqr7ZD0u0iPPkUL64lIZbqBAz+scqKmlzm8FDrypNC9Yjc8fPOLn9FX9KSYvKTr4rvx3iSIlTJabIQwj2ICCR/oLxBA=="
        let s = try sign("POST", token: token)
        XCTAssertEqual(s.signedHeaders, "host;x-amz-date;x-amz-security-token")
        XCTAssertEqual(s.headers.first { $0.name == "X-Amz-Security-Token" }?.value, token)
        XCTAssertEqual(s.signature, "85d96828115b5dc0cfc3bd16ad9e210dd772bbebba041836c64533a82be05ead")
    }

    /// A caller's own date or Authorization header is replaced, never signed twice.
    func testStaleDateAndAuthorizationAreReplaced() throws {
        let s = try sign("GET", headers: [("X-Amz-Date", "20000101T000000Z"), ("Authorization", "old")])
        XCTAssertEqual(s.signature, "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31")
        XCTAssertEqual(s.headers.filter { $0.name.lowercased() == "authorization" }.count, 1)
    }

    func testTimestamps() {
        XCTAssertEqual(SigV4Signer.timestamps(Self.when).0, "20150830T123600Z")
        XCTAssertEqual(SigV4Signer.timestamps(0).1, "19700101")
    }
}
