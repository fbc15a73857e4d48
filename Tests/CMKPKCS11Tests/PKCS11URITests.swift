import XCTest
@testable import CMKPKCS11

/// The `pkcs11:` URI parser against RFC 7512's own examples (§3.3), with its percent-encoding,
/// and the refusals cmkfs adds: unknown attributes by name, duplicates, bad escapes.
final class PKCS11URITests: XCTestCase {
    /// An RFC example as printed there, folded over lines: the folding is for the page only.
    func parse(_ folded: String) throws -> PKCS11URI {
        try PKCS11URI(parsing: folded.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.joined())
    }

    func testRFC7512Examples() throws {
        XCTAssertEqual(try parse("pkcs11:").path, [:])

        var u = try parse("pkcs11:object=my-pubkey;type=public")
        XCTAssertEqual(u.object, "my-pubkey")
        XCTAssertEqual(u.type, "public")

        u = try parse("pkcs11:object=my-key;type=private?pin-source=file:/etc/token")
        XCTAssertEqual(u.pinSource, "file:/etc/token")
        XCTAssertEqual(try u.pinFile, "/etc/token")

        u = try parse("""
            pkcs11:token=The%20Software%20PKCS%2311%20Softtoken;
                   manufacturer=Snake%20Oil,%20Inc.;
                   model=1.0;
                   object=my-certificate;
                   type=cert;
                   id=%69%95%3E%5C%F4%BD%EC%91;
                   serial=
                   ?pin-source=file:/etc/token_pin
            """)
        XCTAssertEqual(u.token, "The Software PKCS#11 Softtoken")
        XCTAssertEqual(u.string("manufacturer"), "Snake Oil, Inc.")
        XCTAssertEqual(u.string("model"), "1.0")
        XCTAssertEqual(u.path["id"], [0x69, 0x95, 0x3E, 0x5C, 0xF4, 0xBD, 0xEC, 0x91])
        XCTAssertEqual(u.path["serial"], [])
        XCTAssertEqual(try u.pinFile, "/etc/token_pin")

        u = try parse("pkcs11:object=my-sign-key;type=private?module-name=mypkcs11")
        XCTAssertEqual(u.moduleName, "mypkcs11")
        u = try parse("pkcs11:object=my-sign-key;type=private?module-path=/mnt/libmypkcs11.so.1")
        XCTAssertEqual(u.modulePath, "/mnt/libmypkcs11.so.1")

        u = try parse("""
            pkcs11:token=Software%20PKCS%2311%20softtoken;
                   manufacturer=Snake%20Oil,%20Inc.
                   ?pin-value=the-pin
            """)
        XCTAssertEqual(u.queryString("pin-value"), "the-pin")
        XCTAssertNil(u.pinSource)

        XCTAssertEqual(try parse("pkcs11:slot-description=Sun%20Metaslot").string("slot-description"), "Sun Metaslot")

        u = try parse("""
            pkcs11:library-manufacturer=Snake%20Oil,%20Inc.;
                   library-description=Soft%20Token%20Library;
                   library-version=1.23
            """)
        XCTAssertEqual(u.string("library-manufacturer"), "Snake Oil, Inc.")
        XCTAssertEqual(u.string("library-description"), "Soft Token Library")
        XCTAssertEqual(u.string("library-version"), "1.23")

        u = try parse("""
            pkcs11:token=My%20token%25%20created%20by%20Joe;
                   library-version=3;
                   id=%01%02%03%Ba%dd%Ca%fe%04%05%06
            """)
        XCTAssertEqual(u.token, "My token% created by Joe")
        XCTAssertEqual(u.path["id"], [1, 2, 3, 0xBA, 0xDD, 0xCA, 0xFE, 4, 5, 6], "hex digits in either case")

        u = try parse("pkcs11:token=A%20name%20with%20a%20substring%20%25%3B;object=my-certificate;type=cert")
        XCTAssertEqual(u.token, "A name with a substring %;", "an encoded ';' does not split attributes")

        u = try parse("pkcs11:token=Name%20with%20a%20small%20A%20with%20acute:%20%C3%A1;object=my-certificate;type=cert")
        XCTAssertEqual(u.token, "Name with a small A with acute: á")
    }

    /// RFC 7512's vendor-attribute example: cmkfs knows no vendor attributes and names the first one.
    func testUnknownAttributesAreRefusedByName() {
        XCTAssertThrowsError(try parse("""
            pkcs11:token=my-token;
                   object=my-certificate;
                   type=cert;
                   vendor-aaa=value-a
                   ?pin-source=file:/etc/token_pin
                   &vendor-bbb=value-b
            """)) { error in
            XCTAssertEqual(error as? PKCS11URIError, .unknownAttribute("vendor-aaa", component: "path", belongsInOther: false))
            XCTAssertTrue("\(error)".contains("'vendor-aaa'"), "\(error)")
        }
        XCTAssertThrowsError(try PKCS11URI(parsing: "pkcs11:token=t?pin-source=file:/p&vendor-bbb=value-b")) {
            XCTAssertTrue("\($0)".contains("'vendor-bbb'"), "\($0)")
        }
        XCTAssertThrowsError(try PKCS11URI(parsing: "pkcs11:tokn=t")) { XCTAssertTrue("\($0)".contains("'tokn'"), "\($0)") }
        XCTAssertThrowsError(try PKCS11URI(parsing: "pkcs11:module-name=softhsm2")) {
            XCTAssertTrue("\($0)".contains("'module-name' belongs in the query"), "\($0)")
        }
    }

    func testMalformedURIsAreRefused() {
        for (text, expected) in [
            ("token=t", PKCS11URIError.notPKCS11URI),
            ("pkcs11:token=a;token=b", .duplicate("token")),
            ("pkcs11:token=a%2", .malformed("token: '%' must be followed by two hex digits")),
            ("pkcs11:token=a%zz", .malformed("token: '%' must be followed by two hex digits")),
            ("pkcs11:token", .malformed("'token' is not name=value")),
            ("pkcs11:type=key", .malformed("type=key is not one of cert, data, private, public, secret-key")),
        ] {
            XCTAssertThrowsError(try PKCS11URI(parsing: text), text) { XCTAssertEqual($0 as? PKCS11URIError, expected, text) }
        }
        XCTAssertThrowsError(try PKCS11URI(parsing: "pkcs11:?module-name=a&module-path=/b"))
        XCTAssertThrowsError(try PKCS11URI(parsing: "pkcs11:?pin-source=file:/a&pin-value=1"))
        XCTAssertThrowsError(try PKCS11URI(parsing: "pkcs11:?pin-source=https://example.com/pin").pinFile)
        XCTAssertEqual(try PKCS11URI(parsing: "PKCS11:token=T").token, "T", "the scheme is case-insensitive")
        XCTAssertEqual(try PKCS11URI(parsing: "pkcs11:?pin-source=file:///etc/pin").pinFile, "/etc/pin")
    }
}

/// p11-kit's registry as `--pkcs11-module NAME` reads it.
final class PKCS11ModuleRegistryTests: XCTestCase {
    var root = ""

    override func setUpWithError() throws {
        root = NSTemporaryDirectory() + "p11-registry-\(UUID().uuidString.prefix(8))"
        for dir in ["share", "etc", "lib"] { try FileManager.default.createDirectory(atPath: root + "/" + dir, withIntermediateDirectories: true) }
    }

    override func tearDown() { try? FileManager.default.removeItem(atPath: root) }

    func testNamesRelativeModulesAndTheOperatorsOverride() throws {
        try "# packaged\nmodule: /usr/lib/vendor/libvendor.so\ncritical: yes\n".write(toFile: root + "/share/vendor.module", atomically: true, encoding: .utf8)
        try "module:libother.so\n".write(toFile: root + "/share/other.module", atomically: true, encoding: .utf8)
        try "module: /opt/hsm/libvendor-fixed.so\n".write(toFile: root + "/etc/vendor.module", atomically: true, encoding: .utf8)
        try "not a module file\n".write(toFile: root + "/share/README", atomically: true, encoding: .utf8)
        XCTAssertTrue(FileManager.default.createFile(atPath: root + "/lib/libother.so", contents: Data()))
        let registry = PKCS11ModuleRegistry(directories: [root + "/share", root + "/etc"], moduleDirectories: [root + "/lib"])
        XCTAssertEqual(registry.modules().map(\.name), ["other", "vendor"])
        XCTAssertEqual(registry.path(ofModule: "vendor"), "/opt/hsm/libvendor-fixed.so", "/etc overrides the package's file")
        XCTAssertEqual(registry.path(ofModule: "other"), root + "/lib/libother.so", "a relative module: is in the module directory")
        XCTAssertEqual(registry.path(ofModule: "vendor-fixed"), "/opt/hsm/libvendor-fixed.so", "RFC 7512 module-name: lib<name>.so")
        XCTAssertEqual(try registry.library(for: "/any/path/libx.so"), "/any/path/libx.so", "a path is a path")
        XCTAssertThrowsError(try registry.library(for: "nosuch")) { error in
            XCTAssertTrue("\(error)".contains("no PKCS#11 module named 'nosuch'") && "\(error)".contains("registered: other, vendor"), "\(error)")
        }
    }

    /// softhsm2 registers itself with p11-kit on this machine (the integration tests' HSM).
    func testTheSystemRegistryFindsSoftHSM2() throws {
        let path = try XCTUnwrap(PKCS11ModuleRegistry.system.path(ofModule: "softhsm2"))
        XCTAssertTrue(path.hasSuffix("/libsofthsm2.so"), path)
        XCTAssertEqual(access(path, R_OK), 0)
    }
}
