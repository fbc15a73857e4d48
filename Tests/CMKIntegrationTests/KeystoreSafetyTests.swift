import Foundation
import XCTest

/// Where master keys may live and with which modes: never inside the volume they protect
/// (refused at `init`, refused by `cmkfs-kms`, flagged by `fsck`); files created with explicit
/// modes whatever the umask; loose modes warned about, and refused where they expose a key
/// (key files, writable keystores, PIN files others can read).
final class KeystoreSafetyTests: IntegrationTestCase {
    override var mountsInSetUp: Bool { false }

    func mode(_ path: String) -> String {
        sh("stat -c %a \(path)").trimmingCharacters(in: .whitespacesAndNewlines)
    }

    func kmsTool(_ arguments: [String]) -> ShellResult {
        Shell.run(KMSProcess.binary, arguments, timeout: 30, logDir: fx.logs, label: "cmkfs-kms " + arguments.joined(separator: " "))
    }

    // MARK: item 9: a keystore inside the volume

    func testInitRefusesAKeystoreInsideTheVolumeItProtects() throws {
        let root = fx.root
        sh("mkdir \(root)/real && ln -s \(root)/real \(root)/link")
        for (volume, kmsDir) in [("\(root)/v1", "\(root)/v1"), ("\(root)/v2", "\(root)/v2/kms"), ("\(root)/real", "\(root)/link/kms")] {
            let r = fx.cmkfs(["init", volume, "--kms-dir", kmsDir])
            XCTAssertEqual(r.status, 13, "\(r)")
            XCTAssertTrue(r.stderr.contains("inside the volume"), "\(r)")
            XCTAssertFalse(FileManager.default.fileExists(atPath: volume + "/cmkfs.volume"), "\(r)")
            XCTAssertTrue(sh("find \(root)/real \(volume) -name '*.key' 2>/dev/null; true").isEmpty, "no key was made: \(r)")
        }
        // The socket KMS's state: cmkfs-kms refuses to keep it in a volume.
        let k = kmsTool(["key", "create", "--state", vol + "/kms"])
        XCTAssertEqual(k.status, 13, "\(k)")
        XCTAssertTrue(k.stderr.contains("inside the cmkfs volume"), "\(k)")
        XCTAssertFalse(FileManager.default.fileExists(atPath: vol + "/kms"))
    }

    func testFsckFlagsAKeystoreFoundInsideTheVolume() throws {
        XCTAssertEqual(fx.cmkfs(["fsck", vol, "--kms-dir", fx.kms]).status, 0)
        // The keystore in use moved into the volume (as an operator might "to keep it together").
        sh("cp -a \(fx.kms) \(vol)/kms")
        let inUse = fx.cmkfs(["fsck", vol, "--kms-dir", vol + "/kms", "--json"])
        XCTAssertEqual(inUse.status, 15, "\(inUse)")
        XCTAssertTrue(inUse.stdout.contains("\"keystore-in-volume\""), "\(inUse)")
        XCTAssertTrue(inUse.stderr.contains("warning: the KMS keystore \(vol)/kms is inside the volume"), "\(inUse)")
        // A copy of a keystore anywhere outside data/ is found too, whichever keystore is used.
        sh("mkdir -p \(vol)/backup/old && mv \(vol)/kms/*.key \(vol)/backup/old/ && rm -r \(vol)/kms")
        let copy = fx.cmkfs(["fsck", vol, "--kms-dir", fx.kms, "--json"])
        XCTAssertEqual(copy.status, 15, "\(copy)")
        XCTAssertTrue(copy.stdout.contains("\"keystore-in-volume\"") && copy.stdout.contains("backup/old/"), "\(copy)")
        sh("rm -r \(vol)/backup")
        XCTAssertEqual(fx.cmkfs(["fsck", vol, "--kms-dir", fx.kms]).status, 0)
    }

    // MARK: item 10: modes

    func testInitUnderUmask000CreatesNothingOthersCanWrite() throws {
        let u = fx.root + "/u", uk = fx.root + "/uk"
        sh("umask 000 && \(MountFixture.binary) init \(u) --kms-dir \(uk)")
        XCTAssertEqual(mode(u + "/cmkfs.volume"), "644")
        XCTAssertEqual(mode(uk), "700")
        XCTAssertEqual(sh("find \(u) \(uk) -perm /022 ! -type l"), "", "nothing writable by group or others")
        XCTAssertEqual(sh("find \(uk) -type f -perm /077"), "", "key files private")
        XCTAssertEqual(sh("find \(u) -maxdepth 1 -name 'meta.db*' -perm /077"), "", "the database private")
        XCTAssertEqual(mode(u), "700")
        // An existing volume directory others can reach is warned about.
        sh("mkdir -m 755 \(fx.root)/open")
        let open = fx.cmkfs(["init", fx.root + "/open", "--kms-dir", uk])
        XCTAssertTrue(open.succeeded && open.stderr.contains("warning: \(fx.root)/open is reachable by other users (mode 755)"), "\(open)")
    }

    func testLooseKeystoreModesAreWarnedAboutAndModesThatExposeAKeyRefused() throws {
        let key = sh("ls \(fx.kms)/*.key").trimmingCharacters(in: .whitespacesAndNewlines)
        sh("chmod 755 \(fx.kms)")
        let loose = fx.cmkfs(["fsck", vol, "--kms-dir", fx.kms])
        XCTAssertEqual(loose.status, 0, "\(loose)")
        XCTAssertTrue(loose.stderr.contains("warning: the KMS keystore \(fx.kms) is readable by other users (mode 0755)"), "\(loose)")
        sh("chmod 644 \(key)")
        let exposed = fx.cmkfs(["fsck", vol, "--kms-dir", fx.kms])
        XCTAssertEqual(exposed.status, 5, "\(exposed)")
        XCTAssertTrue(exposed.stderr.contains("refusing the key file \(key)") && exposed.stderr.contains("chmod 600"), "\(exposed)")
        sh("chmod 600 \(key) && chmod 777 \(fx.kms)")
        let writable = fx.cmkfs(["fsck", vol, "--kms-dir", fx.kms])
        XCTAssertEqual(writable.status, 5, "\(writable)")
        XCTAssertTrue(writable.stderr.contains("is writable by other users (mode 0777)"), "\(writable)")
        sh("chmod 700 \(fx.kms)")
        let fixed = fx.cmkfs(["fsck", vol, "--kms-dir", fx.kms])
        XCTAssertTrue(fixed.succeeded && !fixed.stderr.contains("warning"), "\(fixed)")

        // cmkfs-kms checks its --state the same way.
        let state = fx.root + "/state"
        XCTAssertTrue(kmsTool(["key", "create", "--state", state]).succeeded)
        XCTAssertEqual(mode(state), "700")
        sh("chmod 755 \(state)")
        let listed = kmsTool(["key", "list", "--state", state])
        XCTAssertTrue(listed.succeeded && listed.stderr.contains("cmkfs-kms: warning: the KMS keystore \(state) is readable by other users"), "\(listed)")
        sh("chmod 700 \(state) && chmod 640 \(state)/*.key")
        let refused = kmsTool(["key", "list", "--state", state])
        XCTAssertEqual(refused.status, 5, "\(refused)")
        XCTAssertTrue(refused.stderr.contains("holds master keys in clear"), "\(refused)")
    }

    func testAPINFileOthersCanReadIsRefused() throws {
        let pin = fx.root + "/pin"
        try SoftHSMTokens.writePINFile(pin)
        let args = ["init", fx.root + "/p", "--kms", "pkcs11", "--pkcs11-module", "/nonexistent/libpkcs11.so", "--token", "t", "--pin-file", pin]
        sh("chmod 644 \(pin)")
        let readable = fx.cmkfs(args)
        XCTAssertEqual(readable.status, 5, "\(readable)")
        XCTAssertTrue(readable.stderr.contains("the PIN file \(pin) is readable by other users (mode 0644)"), "\(readable)")
        sh("chmod 620 \(pin)")
        let writable = fx.cmkfs(args)
        XCTAssertTrue(writable.stderr.contains("warning: the PIN file \(pin) is writable by other users"), "\(writable)")
        XCTAssertFalse(writable.stderr.contains("readable by other users"), "\(writable)")
        sh("chmod 600 \(pin)")
        let ok = fx.cmkfs(args)
        XCTAssertFalse(ok.stderr.contains("PIN file"), "only the missing module is left: \(ok)")
    }
}
