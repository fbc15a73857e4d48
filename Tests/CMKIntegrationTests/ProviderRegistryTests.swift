import Foundation
import XCTest
import CMKVolume

/// The provider registry: every kind the volume and the CLI switch on, with what each kind
/// decides (secret, rotation parallelism, init flags), and the `cmkfs.volume` provider object
/// it reads and writes byte for byte as before the registry.
final class ProviderRegistryTests: IntegrationTestCase {
    override var mountsInSetUp: Bool { false }

    func testEveryShippedKindIsRegisteredWithWhatItDecides() throws {
        XCTAssertEqual(ProviderRegistry.kinds.map(\.name), ["embedded", "socket", "pkcs11", "aws-kms", "vault"])
        XCTAssertEqual(ProviderRegistry.defaultKind.name, "embedded")
        XCTAssertEqual(ProviderRegistry.namesListed, "embedded, socket, pkcs11, aws-kms or vault")
        XCTAssertNil(ProviderRegistry.kind(named: "vaultish"))
        // The in-process KMS computes here: one worker per processor; the others are remote.
        XCTAssertEqual(ProviderKind.embedded.rotationParallelism, .perProcessor)
        XCTAssertEqual(ProviderKind.socket.rotationParallelism, .fixed(32))
        XCTAssertEqual(ProviderKind.pkcs11.rotationParallelism, .fixed(8))
        XCTAssertEqual(ProviderKind.awsKMS.rotationParallelism, .fixed(16))
        XCTAssertEqual(ProviderKind.vault.rotationParallelism, .fixed(8))
        XCTAssertEqual(ProviderRegistry.kinds.filter { $0.secret != nil }.map(\.name), ["pkcs11", "vault"])
        XCTAssertEqual(ProviderKind.pkcs11.secret?.environmentVariable, "CMKFS_PKCS11_PIN")
        XCTAssertEqual(ProviderKind.vault.secret?.environmentVariable, "VAULT_TOKEN")
        let owners = Dictionary(uniqueKeysWithValues: ProviderRegistry.flags.map { ($0.flag.name, $0.kinds) })
        XCTAssertEqual(owners, ["--kms-dir": ["embedded"], "--kms-socket": ["socket"], "--key-id": ["socket"],
                                "--pkcs11-module": ["pkcs11"], "--pkcs11-uri": ["pkcs11"], "--token": ["pkcs11"], "--pin-file": ["pkcs11"], "--key-label": ["pkcs11"],
                                "--aws-key-id": ["aws-kms"], "--aws-region": ["aws-kms"], "--aws-endpoint": ["aws-kms"], "--aws-profile": ["aws-kms"],
                                "--vault-addr": ["vault"], "--vault-key": ["vault"], "--vault-mount": ["vault"], "--vault-namespace": ["vault"],
                                "--vault-ca-cert": ["vault"], "--vault-token-file": ["vault"], "--vault-kv-mount": ["vault"]])
        XCTAssertEqual(ProviderKind.vault.problem(withFlags: [:]), "--kms vault needs --vault-addr URL and --vault-key NAME")
        XCTAssertEqual(ProviderKind.vault.problem(withFlags: ["--vault-addr": "ftp://x", "--vault-key": "k"]),
                       "the Vault address ftp://x is not an http:// or https:// URL")
        XCTAssertEqual(ProviderKind.vault.problem(withFlags: ["--vault-addr": "https://v:8200", "--vault-key": "../k"]),
                       "--vault-key: '../k' has characters other than A-Z a-z 0-9 . _ -")
        XCTAssertEqual(ProviderKind.awsKMS.problem(withFlags: ["--aws-key-id": "k"]), "--kms aws-kms needs --aws-region REGION")
        XCTAssertEqual(ProviderKind.awsKMS.problem(withFlags: ["--aws-key-id": "k", "--aws-region": "us-east-1", "--aws-endpoint": "ftp://x"]),
                       "--aws-endpoint must be an http:// or https:// URL")
        XCTAssertEqual(ProviderKind.socket.problem(withFlags: [:]), "--kms socket needs --kms-socket PATH")
        XCTAssertEqual(ProviderKind.pkcs11.problem(withFlags: ["--token": "t"]), "--kms pkcs11 needs --pkcs11-module PATH|NAME")
        XCTAssertEqual(ProviderKind.pkcs11.problem(withFlags: [:]), "--kms pkcs11 needs --pkcs11-module PATH|NAME and --token LABEL")
        // --pkcs11-uri stands for the module, token, key label and PIN file flags.
        let uri = ["--pkcs11-uri": "pkcs11:token=t;object=k%20v?module-name=softhsm2&pin-source=file:/etc/pin"]
        XCTAssertNil(ProviderKind.pkcs11.problem(withFlags: uri))
        let (config, pinFile) = ProviderKind.pkcs11.config(fromFlags: uri)
        XCTAssertEqual(config, ProviderConfig(kind: "pkcs11", keyID: "k v", pkcs11Module: "softhsm2", tokenLabel: "t"))
        XCTAssertEqual(pinFile, "/etc/pin")
        XCTAssertEqual(ProviderKind.pkcs11.problem(withFlags: ["--pkcs11-uri": "pkcs11:token=t"]), "--kms pkcs11 needs --pkcs11-module PATH|NAME")
        XCTAssertNil(ProviderKind.embedded.problem(withFlags: [:]))
    }

    func testFlagsBecomeTheRecordedSettings() throws {
        let (socket, noFile) = ProviderKind.socket.config(fromFlags: ["--kms-socket": "rel/kms.sock", "--key-id": "mk-7"])
        XCTAssertEqual(socket, ProviderConfig(kind: "socket", keyID: "mk-7",
                                              kmsSocket: FileManager.default.currentDirectoryPath + "/rel/kms.sock"))
        XCTAssertNil(noFile)
        let (hsm, pinFile) = ProviderKind.pkcs11.config(fromFlags: ["--pkcs11-module": "/m.so", "--token": "t", "--pin-file": "/p",
                                                                    "--key-label": "vol"])
        XCTAssertEqual(hsm, ProviderConfig(kind: "pkcs11", keyID: "vol", pkcs11Module: "/m.so", tokenLabel: "t"))
        XCTAssertEqual(pinFile, "/p", "the PIN file is read, never recorded")
        XCTAssertEqual(ProviderKind.embedded.config(fromFlags: ["--kms-dir": "/k"]).config, ProviderConfig(kind: "embedded", keyID: "", kmsDir: "/k"))
        let (vault, tokenFile) = ProviderKind.vault.config(fromFlags: ["--vault-addr": "https://v:8200", "--vault-key": "vol", "--vault-token-file": "/t"])
        XCTAssertEqual(vault, ProviderConfig(kind: "vault", keyID: "vol", settings: ["vault_addr": "https://v:8200"]))
        XCTAssertEqual(tokenFile, "/t", "the token file is read, never recorded")
    }

    /// `cmkfs.volume` as volumes of each kind have it on disk (the embedded one from
    /// Tests/ReferenceVolumes/format2-names-5956063): decoded and written again as `init`
    /// writes it, the bytes are the same (the registry changed how it is held, not the format).
    func testVolumeConfigProviderObjectsKeepTheirBytes() throws {
        let providers = [
            #"    "key_id" : "mk-ff52d851fcd1708d",\n    "kind" : "embedded",\n    "kms_dir" : "\/tmp\/cmkfs-ref-AZIplC\/kms""#,
            #"    "key_id" : "mk-2",\n    "kind" : "socket",\n    "kms_socket" : "\/run\/kms.sock""#,
            #"    "key_id" : "vol",\n    "kind" : "pkcs11",\n    "pkcs11_module" : "\/usr\/lib\/softhsm\/libsofthsm2.so",\n    "token_label" : "cmkfs""#,
            #"    "key_id" : "vol-key",\n    "kind" : "vault",\n    "vault_addr" : "https:\/\/vault:8200",\n    "vault_ca_cert" : "\/etc\/ca.pem",\n    "vault_mount" : "transit""#,
        ]
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        for provider in providers {
            let file = #"{\n  "block_size" : 4096,\n  "created_at" : "2026-12-06T03:05:13.401Z",\n  "format" : 2,\n  "names" : "aes-256-siv",\n  "provider" : {\n"#
                + provider
                + #"\n  },\n  "volume_id" : "14397d9eb0f79eb01ade944ff613adc4"\n}"#
            let text = file.replacingOccurrences(of: #"\n"#, with: "\n")
            let config = try JSONDecoder().decode(VolumeConfig.self, from: Data(text.utf8))
            XCTAssertEqual(String(decoding: try encoder.encode(config), as: UTF8.self), text)
        }
        let object = #"{"key_id":"vol","kind":"pkcs11","pkcs11_module":"/usr/lib/softhsm/libsofthsm2.so","token_label":"cmkfs"}"#
        let hsm = try JSONDecoder().decode(ProviderConfig.self, from: Data(object.utf8))
        XCTAssertEqual(hsm.tokenLabel, "cmkfs")
        XCTAssertEqual(hsm.pkcs11Module, "/usr/lib/softhsm/libsofthsm2.so")
        // A kind this cmkfs does not know keeps its string settings and is refused by name.
        let future = try JSONDecoder().decode(ProviderConfig.self, from: Data(#"{"kind":"quantum","key_id":"k","quantum_addr":"https://v","tries":3}"#.utf8))
        XCTAssertEqual(future.settings, ["quantum_addr": "https://v"])
        XCTAssertThrowsError(try ProviderRegistry.makeProvider(future, create: false, volume: "/v", secret: nil)) { error in
            XCTAssertEqual((error as? CMKError)?.code, .unsupportedFormat)
            XCTAssertTrue("\(error)".contains("uses key provider 'quantum', which this cmkfs does not know"), "\(error)")
        }
    }

    /// `init`'s provider flags are parsed from the registry: before or after VOLUME, as
    /// `--flag VALUE` or `--flag=VALUE`, and what is not a flag of any provider is refused.
    func testInitTakesProviderFlagsInAnyPlace() throws {
        let first = fx.root + "/pv1", second = fx.root + "/pv2"
        let before = fx.cmkfs(["init", "--kms-dir", fx.kms, first])
        XCTAssertTrue(before.succeeded, "\(before)")
        let equals = fx.cmkfs(["init", "--kms-dir=" + fx.kms, second, "--kms", "embedded"])
        XCTAssertTrue(equals.succeeded, "\(equals)")
        for volume in [first, second] {
            fx.adoptVolume(volume)
            let recorded = try Volume.recordedProvider(at: volume)
            XCTAssertEqual(recorded.kind, "embedded")
            XCTAssertEqual(recorded.kmsDir, fx.kms)
        }
        let unknown = fx.cmkfs(["init", fx.root + "/pv3", "--kms-dri", fx.kms])
        XCTAssertEqual(unknown.status, 64, "\(unknown)")
        XCTAssertTrue(unknown.stderr.contains("Unknown option '--kms-dri'"), unknown.stderr)
        let missing = fx.cmkfs(["init", fx.root + "/pv3", "--kms", "socket", "--kms-socket"])
        XCTAssertEqual(missing.status, 64, "\(missing)")
        XCTAssertTrue(missing.stderr.contains("Missing value for '--kms-socket <PATH>'"), missing.stderr)
        let twice = fx.cmkfs(["init", fx.root + "/pv3", fx.root + "/pv4"])
        XCTAssertEqual(twice.status, 64, "\(twice)")
        XCTAssertTrue(twice.stderr.contains("Unexpected argument"), twice.stderr)
        let required = fx.cmkfs(["init", fx.root + "/pv3", "--kms", "pkcs11", "--token", "t"])
        XCTAssertEqual(required.status, 64, "\(required)")
        XCTAssertTrue(required.stderr.contains("--kms pkcs11 needs --pkcs11-module PATH"), required.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: fx.root + "/pv3"))
    }
}
