import Foundation
import XCTest

/// A SoftHSM2 volume named by an RFC 7512 `pkcs11:` URI and by p11-kit's module name, for
/// `cmkfs init` and `cmkfs-kms`; a URI cmkfs cannot honour is refused by the attribute's name.
extension ProviderMountTests {
    func testPKCS11VolumeByURIWithTheModuleFromP11KitsRegistry() throws {
        let (_, env, pinFile) = try makeToken()
        let uri = "pkcs11:token=cmkfs-it;object=uri%20key?module-name=softhsm2&pin-source=file:\(pinFile)"
        let r = cmkfs(["init", pvol, "--kms", "pkcs11", "--pkcs11-uri", uri], env: env)
        XCTAssertTrue(r.succeeded, "\(r)")
        let config = try String(contentsOfFile: pvol + "/cmkfs.volume", encoding: .utf8)
        XCTAssertTrue(config.contains("\"pkcs11_module\" : \"softhsm2\""), "the registry name is recorded, found again at each open: \(config)")
        XCTAssertTrue(config.contains("\"token_label\" : \"cmkfs-it\"") && config.contains("\"key_id\" : \"uri key\""), config)
        XCTAssertFalse(config.contains(pinFile) || config.contains(SoftHSMTokens.userPIN), "neither the PIN nor its file is recorded")
        try mountP(env: env, ["--pin-file", pinFile])
        try roundTrip(env: env, mountArgs: ["--pin-file", pinFile])
        try unmountP()
        // fstab's form: the URI's pin-source gives the PIN; a URI for another token is refused.
        try mountP(env: env, ["-o", "pkcs11_uri=\(uri)"])
        try unmountP()
        let other = cmkfs(["mount", pvol, mnt, "--pkcs11-uri", "pkcs11:token=elsewhere?pin-source=file:\(pinFile)"], env: env)
        XCTAssertEqual(other.status, 64, "\(other)")
        XCTAssertTrue(other.stderr.contains("--pkcs11-uri names token 'elsewhere', but \(pvol) uses 'cmkfs-it'"), "\(other)")

        // The same token for cmkfs-kms, by URI and by registry name.
        let list = Shell.run("/usr/bin/env", env.map { "\($0.key)=\($0.value)" } + [KMSProcess.binary, "key", "list", "--json", "--pkcs11-uri", uri.replacingOccurrences(of: ";object=uri%20key", with: "")],
                             timeout: 60, logDir: fx.logs)
        XCTAssertTrue(list.succeeded && list.stdout.contains("\"key_id\" : \"uri key\""), "\(list)")
        let byName = Shell.run("/usr/bin/env", env.map { "\($0.key)=\($0.value)" } + [KMSProcess.binary, "key", "list", "--pkcs11-module", "softhsm2",
                                                                                     "--token", "cmkfs-it", "--pin-file", pinFile],
                               timeout: 60, logDir: fx.logs)
        XCTAssertTrue(byName.succeeded && byName.stdout.contains("uri key v1=enabled"), "\(byName)")
    }

    func testPKCS11URIsCmkfsCannotHonourAreRefusedByName() throws {
        let (_, env, pinFile) = try makeToken()
        let cases: [(String, String)] = [
            ("pkcs11:token=cmkfs-it;tokn=x?module-name=softhsm2", "unknown pkcs11: URI attribute 'tokn'"),
            ("pkcs11:token=cmkfs-it;serial=0123?module-name=softhsm2", "serial= is not used by cmkfs"),
            ("pkcs11:token=cmkfs-it;type=private?module-name=softhsm2", "type=private: cmkfs's master keys are secret keys"),
            ("pkcs11:token=cmkfs-it?module-name=softhsm2&pin-value=4321", "pin-value= would put the PIN in argv"),
            ("pkcs11:token=cmkfs%2?module-name=softhsm2", "'%' must be followed by two hex digits"),
            ("pkcs11:token=cmkfs-it", "--kms pkcs11 needs --pkcs11-module PATH|NAME"),
        ]
        for (uri, message) in cases {
            let r = cmkfs(["init", pvol, "--kms", "pkcs11", "--pkcs11-uri", uri, "--pin-file", pinFile], env: env)
            XCTAssertEqual(r.status, 64, "\(uri): \(r)")
            XCTAssertTrue(r.stderr.contains(message), "\(uri) should say \(message): \(r)")
            XCTAssertFalse(FileManager.default.fileExists(atPath: pvol + "/cmkfs.volume"), uri)
        }
        let clash = cmkfs(["init", pvol, "--kms", "pkcs11", "--pkcs11-uri", "pkcs11:token=cmkfs-it?module-name=softhsm2",
                           "--token", "other", "--pin-file", pinFile], env: env)
        XCTAssertEqual(clash.status, 64, "\(clash)")
        XCTAssertTrue(clash.stderr.contains("--token other disagrees with --pkcs11-uri, which says cmkfs-it"), "\(clash)")
        let unknown = cmkfs(["init", pvol, "--kms", "pkcs11", "--pkcs11-module", "no-such-hsm", "--token", "cmkfs-it", "--pin-file", pinFile], env: env)
        XCTAssertEqual(unknown.status, 5, "\(unknown)")
        XCTAssertTrue(unknown.stderr.contains("no PKCS#11 module named 'no-such-hsm' in p11-kit's registry") && unknown.stderr.contains("softhsm2"),
                      "\(unknown)")
    }
}
