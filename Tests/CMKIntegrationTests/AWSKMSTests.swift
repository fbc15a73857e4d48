import Foundation
import XCTest
import CMKCrypto
import CMKKeys

/// Real mounts on the AWS KMS provider against moto_server (behind the fault layer that makes it
/// refuse like AWS, checks every signature, and injects faults): round trip and remount, status,
/// fsck and audit; rotate and purge; the key owner's kill switch (DisableKey, ScheduleKeyDeletion,
/// AccessDenied) cutting an open file within one lease renewal; throttling; a hung or stopped
/// server (EIO, no hang); wrong or missing credentials (exit 5 and a hint). moto and the fault
/// layer are stopped in tearDown, whatever happened.
final class AWSKMSTests: IntegrationTestCase {
    override var mountsInSetUp: Bool { false }
    var server: AWSKMSServer!
    var keyID = ""
    var pvol: String { fx.root + "/avol" }

    override func setUpWithError() throws {
        try super.setUpWithError()
        server = AWSKMSServer(logDir: fx.logs)
        try server.start()
        keyID = try server.createKey()
    }

    override func tearDown() {
        let server = self.server
        super.tearDown()
        if let problem = server?.stop() { XCTFail(problem) }
        self.server = nil
    }

    /// cmkfs with the test principal's credentials (unless `env` overrides them), detached from a
    /// terminal, with `HOME` pointing at an empty directory so no real ~/.aws is read.
    @discardableResult
    func cmkfs(_ arguments: [String], env: [String: String] = [:], timeout: TimeInterval = 60) -> ShellResult {
        let home = fx.root + "/home"
        try? FileManager.default.createDirectory(atPath: home, withIntermediateDirectories: true)
        let all = server.credentialEnvironment.merging(["HOME": home]) { $1 }.merging(env) { $1 }
        let assignments = all.sorted { $0.key < $1.key }.filter { !$0.value.isEmpty }.map { "\($0.key)=\($0.value)" }
        let unset = all.filter { $0.value.isEmpty }.flatMap { ["-u", $0.key] }
        return Shell.run("/usr/bin/setsid", ["-w", "/usr/bin/env"] + unset + assignments + [MountFixture.binary] + arguments,
                         timeout: timeout, logDir: fx.logs, label: "cmkfs " + arguments.joined(separator: " "))
    }

    var initArguments: [String] {
        ["init", pvol, "--kms", "aws-kms", "--aws-key-id", keyID, "--aws-region", AWSKMSServer.region, "--aws-endpoint", server.endpoint]
    }

    func makeVolume() throws {
        let r = cmkfs(initArguments)
        guard r.succeeded else { throw FixtureError("init --kms aws-kms failed: \(r)") }
        fx.adoptVolume(pvol)
    }

    func mountP(_ extra: [String] = [], env: [String: String] = [:]) throws {
        let r = cmkfs(["mount", pvol, mnt] + extra, env: env)
        guard r.succeeded else { throw FixtureError("mount failed: \(r)\nmount.log: \(fx.mountLog(pvol))") }
    }

    func unmountP() throws {
        let r = cmkfs(["unmount", mnt])
        guard r.succeeded else { throw FixtureError("unmount failed: \(r)") }
    }

    func json(_ r: ShellResult) -> [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any]) ?? [:]
    }

    // MARK: round trip

    func testInitMountRemountStatusFsckAndAudit() throws {
        let created = cmkfs(initArguments + ["--json"])
        XCTAssertTrue(created.succeeded, "\(created)")
        fx.adoptVolume(pvol)
        XCTAssertEqual(json(created)["provider"] as? String, "aws-kms")
        XCTAssertEqual(json(created)["key_id"] as? String, keyID)
        let config = try String(contentsOfFile: pvol + "/cmkfs.volume", encoding: .utf8)
        let provider = (try JSONSerialization.jsonObject(with: Data(config.utf8)) as? [String: Any])?["provider"] as? [String: Any]
        XCTAssertEqual(provider?["aws_region"] as? String, "us-east-1", config)
        XCTAssertEqual(provider?["aws_endpoint"] as? String, server.endpoint, config)
        XCTAssertFalse(config.contains(AWSKMSServer.secretAccessKey) || config.contains(AWSKMSServer.accessKeyID), "no credentials in the volume")
        try mountP()
        for (i, size) in [0, 1, 4095, 4097, 300_001].enumerated() { makeRandomFile("\(plain)/f\(i)", size: size) }
        sh("cp -r \(plain) \(mnt)/tree")
        XCTAssertEqual(manifest(mnt + "/tree"), manifest(plain))
        try unmountP()
        try mountP()
        XCTAssertEqual(manifest(mnt + "/tree"), manifest(plain))
        let status = cmkfs(["status", pvol, "--json"])
        XCTAssertTrue(status.succeeded, "\(status)")
        XCTAssertTrue(status.stdout.contains("aws-kms"), status.stdout)
        try unmountP()
        let fsck = cmkfs(["fsck", pvol])
        XCTAssertTrue(fsck.succeeded, "\(fsck)")
        let verify = cmkfs(["audit", "verify", pvol])
        XCTAssertTrue(verify.succeeded, "\(verify)")
        // The audit records of key uses name AWS's request id (CloudTrail's requestID).
        let shown = cmkfs(["audit", "show", pvol, "--json"])
        XCTAssertTrue(shown.stdout.contains("\"kms_server_request\""), shown.stdout.suffix(2000).description)
        // Every Decrypt carried the volume and file ids in its EncryptionContext; the fault
        // layer saw them all signed with the test principal's key.
        let stats = try server.stats()
        XCTAssertGreaterThan(stats["Decrypt"] ?? 0, 0, "\(stats)")
        XCTAssertFalse(fx.mountLog(pvol).contains(AWSKMSServer.secretAccessKey))
    }

    // MARK: rotate and purge

    /// Rotation re-encrypts every EDEK under the next version; purging version 1 retires it in
    /// the volume and leaves the KMS key (which every version shares) enabled.
    func testRotateAndPurgeKeepTheKMSKeyEnabled() throws {
        try makeVolume()
        try mountP()
        py(KeyLifecycleTests.populate, [mnt, "200"])
        let before = try server.stats()
        let r = cmkfs(["key", "rotate", pvol, "--json"], timeout: 300)
        XCTAssertTrue(r.succeeded, "rotate: \(r)")
        // The EDEKs moved by ReEncrypt inside the KMS: no DEK left AWS for the rotation.
        let after = try server.stats()
        XCTAssertGreaterThanOrEqual((after["ReEncrypt"] ?? 0) - (before["ReEncrypt"] ?? 0), 200, "\(after)")
        XCTAssertLessThan((after["Decrypt"] ?? 0) - (before["Decrypt"] ?? 0), 10, "only the volume's own keys are unwrapped: \(after)")
        print("[cmkfs-it] rotate on aws-kms through the fault layer: \(r.stdout.replacingOccurrences(of: "\n", with: " "))")
        let list = cmkfs(["key", "list", pvol, "--json"])
        let versions = (json(list)["versions"] as? [[String: Any]]) ?? []
        XCTAssertEqual(versions.map { $0["state"] as? String }, ["deactivated", "active"], list.stdout)
        XCTAssertEqual(versions.map { $0["edeks"] as? Int }, [0, 200], list.stdout)
        let purge = cmkfs(["key", "purge", pvol, "--version", "1"])
        XCTAssertTrue(purge.succeeded, "purge: \(purge)")
        XCTAssertEqual(try server.keyState(keyID), "Enabled", "purging version 1 must not schedule the shared KMS key's deletion")
        try unmountP()
        try mountP()
        py(KeyLifecycleTests.checkAll, [mnt, "200"])
        try unmountP()
        XCTAssertTrue(cmkfs(["audit", "verify", pvol]).succeeded)
    }

    /// `key rotate --aws-key-id NEW` moves a mounted volume onto another KMS key: every EDEK is
    /// re-encrypted into it inside AWS (ReEncrypt, no DEK leaves the KMS), the volume records the
    /// new key, and the key owner can then delete the old key without losing a file.
    func testRotateOntoAnotherKMSKeyLetsTheOldKeyGo() throws {
        try makeVolume()
        try mountP()
        py(KeyLifecycleTests.populate, [mnt, "60"])
        let newKey = try server.createKey()
        let before = try server.stats()
        let r = cmkfs(["key", "rotate", pvol, "--aws-key-id", newKey, "--json"], timeout: 300)
        XCTAssertTrue(r.succeeded, "rotate --aws-key-id: \(r)")
        XCTAssertEqual(json(r)["key_id"] as? String, newKey, r.stdout)
        XCTAssertEqual(json(r)["active_version"] as? Int, 2, r.stdout)
        XCTAssertEqual(json(r)["failed"] as? Int, 0, r.stdout)
        let after = try server.stats()
        XCTAssertGreaterThanOrEqual((after["ReEncrypt"] ?? 0) - (before["ReEncrypt"] ?? 0), 60, "\(after)")
        let config = try String(contentsOfFile: pvol + "/cmkfs.volume", encoding: .utf8)
        let provider = (try JSONSerialization.jsonObject(with: Data(config.utf8)) as? [String: Any])?["provider"] as? [String: Any]
        XCTAssertEqual(provider?["key_id"] as? String, newKey, "the volume records the new key: \(config)")
        // The live mount reads every file again from its new EDEK, and writes new ones under the new key.
        XCTAssertTrue(cmkfs(["cache", "flush", pvol]).succeeded)
        py(KeyLifecycleTests.checkAll, [mnt, "60"])
        sh("printf new > \(mnt)/new")
        XCTAssertTrue(cmkfs(["key", "purge", pvol, "--version", "1"]).succeeded)
        try unmountP()
        // The key owner deletes the old key (NotFoundException from now on): nothing needs it.
        try server.fault(["deleted": [keyID]])
        try mountP()
        py(KeyLifecycleTests.checkAll, [mnt, "60"])
        XCTAssertEqual(sh("cat \(mnt)/new"), "new")
        // A plain rotation goes on within the new key; revoke disables the key the volume uses now.
        let again = cmkfs(["key", "rotate", pvol, "--json"], timeout: 300)
        XCTAssertTrue(again.succeeded, "\(again)")
        XCTAssertEqual(json(again)["key_id"] as? String, newKey, again.stdout)
        XCTAssertEqual(json(again)["active_version"] as? Int, 3, again.stdout)
        XCTAssertTrue(cmkfs(["key", "revoke", pvol]).succeeded)
        XCTAssertEqual(try server.keyState(newKey), "Disabled")
        XCTAssertTrue(fx.sh("cat \(mnt)/new").stderr.contains("Permission denied"))
        XCTAssertTrue(cmkfs(["key", "enable", pvol]).succeeded)
        XCTAssertTrue(waitUntil(deadline: 10) { fx.sh("cat \(mnt)/new").stdout == "new" })
        try unmountP()
        let verify = cmkfs(["audit", "verify", pvol])
        XCTAssertTrue(verify.succeeded, "\(verify)")
        let fsck = cmkfs(["fsck", pvol])
        XCTAssertTrue(fsck.succeeded, "\(fsck)")
    }

    /// A rotation onto a key that is disabled is refused before anything changes; another
    /// provider's volume refuses the flag.
    func testRotateOntoADisabledKeyIsRefusedBeforeAnythingChanges() throws {
        try makeVolume()
        let newKey = try server.createKey()
        try server.owner("DisableKey", ["KeyId": newKey])
        let r = cmkfs(["key", "rotate", pvol, "--aws-key-id", newKey])
        XCTAssertEqual(r.status, 5, "\(r)")
        XCTAssertTrue(r.stderr.contains("disabled"), "\(r)")
        let list = cmkfs(["key", "list", pvol, "--json"])
        XCTAssertEqual(((json(list)["versions"] as? [[String: Any]]) ?? []).count, 1, list.stdout)
        try mountP()
        try unmountP()
    }

    /// ReEncrypt against moto: the EDEK moves to the next version's context without its DEK
    /// leaving the KMS, and no longer unwraps under the old one.
    func testReEncryptMovesAnEDEKToTheNextVersion() throws {
        let provider = try server.provider()
        let v1 = KeyRef(keyID: keyID, version: 1)
        let v2 = try provider.createVersion(of: keyID)
        let context = WrapContext(volumeID: Array(repeating: 7, count: 16), fileID: Array(repeating: 9, count: 16))
        let dek = try SecretBytes.random(count: 32)
        let old = try provider.wrap(dek, with: v1, context: context)
        let decryptsBefore = try server.stats()["Decrypt"] ?? 0
        let moved = try provider.reEncrypt(old, from: v1, to: v2, context: context)
        XCTAssertEqual(try server.stats()["Decrypt"] ?? 0, decryptsBefore, "no Decrypt: the DEK stayed in the KMS")
        XCTAssertTrue(try provider.unwrap(moved, with: v2, context: context).constantTimeEquals(dek))
        XCTAssertThrowsError(try provider.unwrap(moved, with: v1, context: context))
        XCTAssertThrowsError(try provider.reEncrypt(old, from: v1, to: v2, context: WrapContext(volumeID: context.volumeID, fileID: [1])))
        // A disabled key refuses ReEncrypt as it refuses Decrypt (the key owner's kill switch).
        try server.owner("DisableKey", ["KeyId": keyID])
        XCTAssertThrowsError(try provider.reEncrypt(old, from: v1, to: v2, context: context)) { error in
            guard case KeyProviderError.keyDisabled = error else { return XCTFail("\(error)") }
        }
    }

    // MARK: the key owner's kill switch

    /// moto keeps decrypting for a disabled key: only the lease renewal's DescribeKey can cut a
    /// file whose key is already cached.
    func secondsUntilCut(_ cut: () throws -> Void) throws -> Double? {
        try secondsUntilHeldFileIsCut(mnt + "/f", log: "mount.log: \(fx.mountLog(pvol))", cut: cut)
    }

    func testDisableKeyAtAWSCutsAnOpenFileWithinOneRenewal() throws {
        try makeVolume()
        try mountP(["--lease-renew", "300ms"])
        let seconds = try secondsUntilCut { try server.owner("DisableKey", ["KeyId": keyID]) }
        if let seconds {
            XCTAssertLessThan(seconds, 10, "one renewal interval (300 ms) plus the sweep tick")
            report("AWS DisableKey → held-open file cut", seconds: seconds)
        }
        // A new open is refused too (EACCES), and the key owner's EnableKey brings it back.
        XCTAssertTrue(fx.sh("cat \(mnt)/f").stderr.contains("Permission denied"))
        try server.owner("EnableKey", ["KeyId": keyID])
        XCTAssertTrue(waitUntil(deadline: 10) { fx.sh("cat \(mnt)/f").stdout == "held" })
    }

    func testScheduleKeyDeletionAtAWSCutsAnOpenFileAndMountSaysDestroyed() throws {
        try makeVolume()
        try mountP(["--lease-renew", "300ms"])
        let seconds = try secondsUntilCut { try server.owner("ScheduleKeyDeletion", ["KeyId": keyID, "PendingWindowInDays": 7]) }
        XCTAssertNotNil(seconds)
        try unmountP()
        let r = cmkfs(["mount", pvol, mnt])
        XCTAssertEqual(r.status, 5, "\(r)")
        XCTAssertTrue(r.stderr.contains("destroyed"), "\(r)")
    }

    func testRevokeAndEnableThroughCmkfsDisableTheKMSKey() throws {
        try makeVolume()
        XCTAssertTrue(cmkfs(["key", "revoke", pvol]).succeeded)
        XCTAssertEqual(try server.keyState(keyID), "Disabled")
        let r = cmkfs(["mount", pvol, mnt])
        XCTAssertEqual(r.status, 5, "\(r)")
        XCTAssertTrue(r.stderr.contains("disabled") && r.stderr.contains("describe-key"), "\(r)")
        XCTAssertTrue(cmkfs(["key", "enable", pvol]).succeeded)
        XCTAssertEqual(try server.keyState(keyID), "Enabled")
        try mountP()
    }

    func testAccessDeniedIsTheKillSwitchAndThrottlingIsRetried() throws {
        try makeVolume()
        try mountP()
        sh("printf one > \(mnt)/a")
        try unmountP()
        try mountP()
        // Throttled three times, then answered: the open succeeds after the backoff.
        try server.fault(["throttle": 3])
        XCTAssertEqual(sh("cat \(mnt)/a"), "one")
        XCTAssertTrue(cmkfs(["cache", "flush", pvol]).succeeded)
        try server.fault(["deny": true])
        let denied = fx.sh("cat \(mnt)/a")
        XCTAssertTrue(denied.stderr.contains("Permission denied"), "AccessDeniedException is the key owner's kill switch: \(denied)")
        try server.fault(["deny": false])
        XCTAssertEqual(sh("cat \(mnt)/a"), "one")
    }

    /// A key whose deletion went through (AWS answers NotFoundException; moto never deletes, so
    /// the fault layer answers it) is the key owner's kill switch for files not yet open, as for
    /// open ones: EACCES, not the EIO of an outage.
    func testADeletedKeyRefusesFreshOpensWithEACCES() throws {
        try makeVolume()
        try mountP()
        sh("printf one > \(mnt)/a")
        XCTAssertTrue(cmkfs(["cache", "flush", pvol]).succeeded)
        try server.fault(["deleted": [keyID]])
        let gone = fx.sh("cat \(mnt)/a")
        XCTAssertTrue(gone.stderr.contains("Permission denied"), "a deleted key is the kill switch, not an outage: \(gone)")
        XCTAssertTrue(fx.mountLog(pvol).contains("NotFoundException"), fx.mountLog(pvol))
        try server.fault(["deleted": [String]()])
        XCTAssertEqual(sh("cat \(mnt)/a"), "one")
    }

    // MARK: outages

    func testHungAndStoppedServerGiveEIOWithinTheTimeoutNotAHang() throws {
        try makeVolume()
        let env = ["CMKFS_KMS_TIMEOUT_MS": "1000"]
        try mountP(env: env)
        sh("printf b > \(mnt)/b && printf c > \(mnt)/c")
        try unmountP()
        try mountP(env: env)
        try server.fault(["stall": true])
        let hung = fx.sh("cat \(mnt)/b", timeout: 60)
        XCTAssertFalse(hung.timedOut, "\(hung)")
        XCTAssertTrue(hung.stderr.contains("Input/output error"), "\(hung)")
        XCTAssertLessThan(hung.seconds, 15, "bounded by the 1 s request deadline (plus a retry or two)")
        report("AWS KMS hung → EIO", seconds: hung.seconds)
        server.stopProxy()
        let down = fx.sh("cat \(mnt)/c", timeout: 60)
        XCTAssertTrue(down.stderr.contains("Input/output error"), "\(down)")
        XCTAssertLessThan(down.seconds, 15)
        XCTAssertTrue(fx.mountLog(pvol).contains("unreachable") || fx.mountLog(pvol).contains("timed out"), fx.mountLog(pvol))
        // The server comes back: the same mount works again.
        try server.startProxy()
        XCTAssertEqual(sh("cat \(mnt)/c"), "c")
    }

    // MARK: credentials

    func testWrongOrMissingCredentialsFailWithExit5AndAHint() throws {
        let wrong = cmkfs(initArguments, env: ["AWS_SECRET_ACCESS_KEY": "not-the-secret"])
        XCTAssertEqual(wrong.status, 5, "\(wrong)")
        XCTAssertTrue(wrong.stderr.contains("rejected the credentials") && wrong.stderr.contains("InvalidSignatureException"), "\(wrong)")
        XCTAssertFalse(wrong.stderr.contains("not-the-secret"), "the secret is never printed")
        XCTAssertFalse(FileManager.default.fileExists(atPath: pvol + "/cmkfs.volume"))
        let unknown = cmkfs(initArguments, env: ["AWS_ACCESS_KEY_ID": "AKIDNOBODY"])
        XCTAssertEqual(unknown.status, 5, "\(unknown)")
        XCTAssertTrue(unknown.stderr.contains("UnrecognizedClientException") && unknown.stderr.contains("AKIDNOBODY"), "\(unknown)")
        let none = cmkfs(initArguments, env: ["AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""])
        XCTAssertEqual(none.status, 5, "\(none)")
        XCTAssertTrue(none.stderr.contains("no AWS credentials") && none.stderr.contains("AWS_ACCESS_KEY_ID"), "\(none)")
        // A profile in a credentials file works where the environment has nothing.
        let file = fx.root + "/aws-credentials"
        try "[cmkfs]\naws_access_key_id = \(AWSKMSServer.accessKeyID)\naws_secret_access_key = \(AWSKMSServer.secretAccessKey)\n"
            .write(toFile: file, atomically: true, encoding: .utf8)
        let profile = cmkfs(initArguments + ["--aws-profile", "cmkfs"],
                            env: ["AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "", "AWS_SHARED_CREDENTIALS_FILE": file])
        XCTAssertTrue(profile.succeeded, "\(profile)")
        fx.adoptVolume(pvol)
        // The profile is recorded and read again at mount; a mount without credentials fails cleanly.
        let noCreds = cmkfs(["mount", pvol, mnt], env: ["AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""])
        XCTAssertEqual(noCreds.status, 5, "\(noCreds)")
        XCTAssertTrue(noCreds.stderr.contains("[cmkfs]"), "\(noCreds)")
        try mountP(env: ["AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "", "AWS_SHARED_CREDENTIALS_FILE": file])
    }
}
