import Foundation
import XCTest
import CMKCrypto
@testable import CMKAWSKMS

/// The credential chain: environment, shared credentials and config files, profiles; secrets
/// never in a description or an error.
final class CredentialChainTests: XCTestCase {
    var dir: String!

    override func setUpWithError() throws {
        dir = "/tmp/cmkfs-awscred-\(UUID().uuidString.prefix(8).lowercased())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: false)
        try """
        [default]
        aws_access_key_id = AKIDDEFAULT
        aws_secret_access_key = secret-default

        [ops]
        aws_access_key_id=AKIDOPS
        aws_secret_access_key=secret-ops
        aws_session_token = token-ops
        """.write(toFile: dir + "/credentials", atomically: true, encoding: .utf8)
        try """
        [default]
        region = us-east-1
        [profile cfg]
        aws_access_key_id = AKIDCFG
        aws_secret_access_key = secret-cfg
        """.write(toFile: dir + "/config", atomically: true, encoding: .utf8)
    }

    override func tearDown() {
        if let dir { try? FileManager.default.removeItem(atPath: dir) }
    }

    var files: [String: String] { ["AWS_SHARED_CREDENTIALS_FILE": dir + "/credentials", "AWS_CONFIG_FILE": dir + "/config", "HOME": dir] }

    func secret(_ c: AWSCredentials) -> String { c.secretAccessKey.withUnsafeBytes { String(decoding: $0, as: UTF8.self) } }

    func testEnvironmentWins() throws {
        let c = try AWSCredentialChain.resolve(environment: files.merging(["AWS_ACCESS_KEY_ID": "AKIDENV", "AWS_SECRET_ACCESS_KEY": "secret-env",
                                                                           "AWS_SESSION_TOKEN": "tok"]) { $1 })
        XCTAssertEqual(c.accessKeyID, "AKIDENV")
        XCTAssertEqual(secret(c), "secret-env")
        XCTAssertEqual(c.sessionToken, "tok")
        XCTAssertFalse(c.description.contains("secret-env"))
    }

    func testDefaultProfileFromCredentialsFile() throws {
        let c = try AWSCredentialChain.resolve(environment: files)
        XCTAssertEqual(c.accessKeyID, "AKIDDEFAULT")
        XCTAssertEqual(secret(c), "secret-default")
        XCTAssertNil(c.sessionToken)
    }

    func testAWSProfileAndExplicitProfile() throws {
        let env = files.merging(["AWS_PROFILE": "ops"]) { $1 }
        let c = try AWSCredentialChain.resolve(environment: env)
        XCTAssertEqual(c.accessKeyID, "AKIDOPS")
        XCTAssertEqual(c.sessionToken, "token-ops")
        // An explicit profile beats both AWS_PROFILE and the environment's keys.
        let withKeys = env.merging(["AWS_ACCESS_KEY_ID": "AKIDENV", "AWS_SECRET_ACCESS_KEY": "secret-env"]) { $1 }
        XCTAssertEqual(try AWSCredentialChain.resolve(profile: "cfg", environment: withKeys).accessKeyID, "AKIDCFG")
    }

    func testMissingProfileNamesThePlacesNotASecret() {
        XCTAssertThrowsError(try AWSCredentialChain.resolve(profile: "nope", environment: files)) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("[nope]") && text.contains("[profile nope]"), text)
            XCTAssertFalse(text.contains("secret-"), text)
        }
    }
}
