import Foundation
import XCTest

/// `cmkfs-kms serve` in front of an HSM: its master keys in a real SoftHSM2 token made by the
/// test, none in its state directory, and the customer's key commands working on the token.
final class KMSOnTokenTests: SocketKMSTestCase {
    func cmkfs(_ arguments: [String]) -> ShellResult {
        Shell.run("/usr/bin/setsid", ["-w", MountFixture.binary] + arguments, timeout: 120, logDir: fx.logs,
                  label: "cmkfs " + arguments.joined(separator: " "))
    }

    func testAVolumeOnAKMSFrontingATokenRoundTripsRotatesAndIsCutByTheTokensKeyCommands() throws {
        let k = try KMSProcess.onToken(socket: fx.root + "/kms.sock", state: fx.root + "/kms-state", logPath: fx.logs + "/kms.log",
                                       root: fx.root + "/hsm", logDir: fx.logs)
        try k.start()
        kms = k
        var r = cmkfs(["init", pvol, "--kms", "socket", "--kms-socket", k.socket])
        XCTAssertTrue(r.succeeded, "\(r)")
        // The key is on the token, not in the state directory (which holds only the audit log).
        let listed = k.keyCommand(["list"], logDir: fx.logs)
        XCTAssertTrue(listed.succeeded, "\(listed)")
        let line = listed.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        XCTAssertTrue(line.hasPrefix("cmkfs-") && line.hasSuffix(" v1=enabled"), line)
        let keyID = String(line.split(separator: " ")[0])
        let stateFiles = try FileManager.default.contentsOfDirectory(atPath: k.state)
        XCTAssertEqual(stateFiles.filter { $0.hasSuffix(".key") }, [], "\(stateFiles)")
        XCTAssertTrue(stateFiles.contains("kms-audit.log"), "\(stateFiles)")

        XCTAssertTrue(cmkfs(["mount", pvol, mnt]).succeeded)
        sh("head -c 300001 /dev/urandom > \(fx.root)/blob && cp \(fx.root)/blob \(mnt)/blob && echo secret > \(mnt)/b")
        XCTAssertTrue(cmkfs(["unmount", mnt]).succeeded)
        XCTAssertTrue(cmkfs(["mount", pvol, mnt]).succeeded)
        XCTAssertEqual(sh("cmp \(fx.root)/blob \(mnt)/blob && echo same"), "same\n")

        // The customer disables the key on the token: the next unwrap (b's key is not cached
        // since the remount) is refused (EACCES).
        XCTAssertTrue(k.keyCommand(["disable", keyID], logDir: fx.logs).succeeded)
        XCTAssertTrue(k.keyCommand(["list"], logDir: fx.logs).stdout.contains("v1=disabled"))
        XCTAssertTrue(fx.sh("cat \(mnt)/b").stderr.contains("Permission denied"))
        XCTAssertTrue(k.keyCommand(["enable", keyID], logDir: fx.logs).succeeded)
        XCTAssertEqual(sh("cat \(mnt)/b"), "secret\n")
        XCTAssertTrue(cmkfs(["unmount", mnt]).succeeded)

        // cmkfs' rotation makes v2 on the token through the server; the customer's rotate makes v3.
        r = cmkfs(["key", "rotate", pvol])
        XCTAssertTrue(r.succeeded, "\(r)")
        r = k.keyCommand(["rotate", keyID], logDir: fx.logs)
        XCTAssertEqual(r.stdout.trimmingCharacters(in: .whitespacesAndNewlines), "\(keyID) v3", "\(r)")
        r = k.keyCommand(["destroy", keyID, "--version", "3", "--force"], logDir: fx.logs)
        XCTAssertTrue(r.succeeded, "\(r)")
        XCTAssertEqual(k.keyCommand(["list"], logDir: fx.logs).stdout.trimmingCharacters(in: .whitespacesAndNewlines),
                       "\(keyID) v1=enabled v2=enabled v3=destroyed")
        XCTAssertTrue(cmkfs(["mount", pvol, mnt]).succeeded)
        XCTAssertEqual(sh("cmp \(fx.root)/blob \(mnt)/blob && cat \(mnt)/b"), "secret\n")
        XCTAssertTrue(cmkfs(["unmount", mnt]).succeeded)
        // Every key use went through the server's log, the rotation's re-wraps by batch id.
        let rotations = try k.auditRecords(logDir: fx.logs).filter { $0["operation"] as? String == "rotate" }
        XCTAssertTrue(rotations.contains { ($0["request_id"] as? String)?.contains(".") == true }, "\(rotations)")
        let audit = cmkfs(["audit", "verify", pvol])
        XCTAssertTrue(audit.succeeded, "\(audit)")
    }

    func testTokenFlagsAreCheckedBeforeServing() throws {
        let hsm = try SoftHSMTokens(root: fx.root + "/hsm")
        try SoftHSMTokens.writePINFile(fx.root + "/pin")
        func serve(_ extra: [String]) -> ShellResult {
            Shell.run("/usr/bin/env", ["SOFTHSM2_CONF=\(hsm.config)", KMSProcess.binary, "serve", "--socket", fx.root + "/s.sock",
                                       "--state", fx.root + "/st"] + extra, timeout: 30, logDir: fx.logs)
        }
        var r = serve(["--pkcs11-module", SoftHSMTokens.module, "--token", "nope"])
        XCTAssertEqual(r.status, 64, "\(r)")
        XCTAssertTrue(r.stderr.contains("--pkcs11-module LIB, --token LABEL and --pin-file FILE"), "\(r)")
        r = serve(["--pkcs11-module", SoftHSMTokens.module, "--token", "nope", "--pin-file", fx.root + "/pin"])
        XCTAssertEqual(r.status, 5, "\(r)")
        XCTAssertTrue(r.stderr.contains("no PKCS#11 token labelled 'nope'"), "\(r)")
        try hsm.initToken("t", logDir: fx.logs)
        try SoftHSMTokens.writePINFile(fx.root + "/bad-pin", pin: "9999")
        r = serve(["--pkcs11-module", SoftHSMTokens.module, "--token", "t", "--pin-file", fx.root + "/bad-pin"])
        XCTAssertEqual(r.status, 5, "\(r)")
        XCTAssertTrue(r.stderr.contains("wrong PIN"), "\(r)")
        chmod(fx.root + "/pin", 0o644)
        r = serve(["--pkcs11-module", SoftHSMTokens.module, "--token", "t", "--pin-file", fx.root + "/pin"])
        XCTAssertEqual(r.status, 5, "\(r)")
        XCTAssertTrue(r.stderr.contains("readable by other users"), "\(r)")
        XCTAssertFalse(FileManager.default.fileExists(atPath: fx.root + "/s.sock"))
    }
}
