import Foundation
import XCTest
import CMKHTTP

/// Real mounts whose master key is a transit key of a real OpenBao dev server started by each
/// test (stopped in tearDown, after the fixture unmounted): init, mount, remount, status, audit,
/// rotate and purge through the CLI; the customer's kill switches (revoke the token, raise
/// min_decryption_version, delete the key) cutting a held-open file within one lease renewal;
/// a server that is down (EIO, no hang); a wrong token (exit 5, message, hint).
final class VaultMountTests: IntegrationTestCase {
    override var mountsInSetUp: Bool { false }

    var bao: OpenBaoServer!
    var pvol: String { fx.root + "/pvol" }
    var tokenFile: String { fx.root + "/vault-token" }
    let key = "cmkfs-vol"

    override func setUpWithError() throws {
        try super.setUpWithError()
        bao = try OpenBaoServer(logPath: fx.logs + "/openbao.log")
    }

    override func tearDown() {
        let bao = self.bao
        super.tearDown()
        bao?.stop()
        self.bao = nil
    }

    /// cmkfs detached from any terminal (a missing token never becomes a prompt), with `env`.
    @discardableResult
    func cmkfs(_ arguments: [String], env: [String: String] = [:], timeout: TimeInterval = 60) -> ShellResult {
        let assignments = env.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
        return Shell.run("/usr/bin/setsid", ["-w", "/usr/bin/env", "-u", "VAULT_TOKEN"] + assignments + [MountFixture.binary] + arguments,
                         timeout: timeout, logDir: fx.logs, label: "cmkfs " + arguments.joined(separator: " "))
    }

    /// A token with the documented policy only, written to `tokenFile` (0600); returns it.
    @discardableResult
    func writeVolumeToken() throws -> String {
        let token = try bao.volumeToken(key: key)
        try (token + "\n").write(toFile: tokenFile, atomically: true, encoding: .utf8)
        chmod(tokenFile, 0o600)
        return token
    }

    func initVault(_ extra: [String] = []) throws {
        try writeVolumeToken()
        let r = cmkfs(["init", pvol, "--kms", "vault", "--vault-addr", bao.address, "--vault-key", key, "--vault-token-file", tokenFile] + extra)
        guard r.succeeded else { throw FixtureError("init --kms vault failed: \(r)") }
    }

    func mountP(_ extra: [String] = []) throws {
        let r = cmkfs(["mount", pvol, mnt, "--vault-token-file", tokenFile] + extra)
        guard r.succeeded else { throw FixtureError("mount failed: \(r)\nmount.log: \(fx.mountLog(pvol))") }
    }

    func unmountP() throws {
        let r = cmkfs(["unmount", mnt])
        guard r.succeeded else { throw FixtureError("unmount failed: \(r)") }
    }

    func keyInfo() throws -> [String: Any] {
        try XCTUnwrap(try bao.admin(.get, "transit/keys/\(key)")["data"] as? [String: Any])
    }

    // MARK: round trip

    func testVaultVolumeRoundTripsRemountsAndRecordsNoToken() throws {
        try initVault()
        XCTAssertEqual(try keyInfo()["derived"] as? Bool, true, "init made a derived transit key")
        // The token file is read at init, never recorded; the settings are.
        let config = try String(contentsOfFile: pvol + "/cmkfs.volume", encoding: .utf8)
        let recorded = try XCTUnwrap((try JSONSerialization.jsonObject(with: Data(config.utf8)) as? [String: Any])?["provider"] as? [String: String])
        XCTAssertEqual(recorded, ["kind": "vault", "key_id": key, "vault_addr": bao.address], config)
        let token = try String(contentsOfFile: tokenFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        XCTAssertFalse(config.contains(token), "the token is not in the volume")
        XCTAssertFalse(config.contains(tokenFile), "nor the token file's path")
        // The token from VAULT_TOKEN works the same as from a file.
        let m = cmkfs(["mount", pvol, mnt], env: ["VAULT_TOKEN": token])
        XCTAssertTrue(m.succeeded, "\(m)\n\(fx.mountLog(pvol))")
        for (i, size) in [0, 1, 4095, 4097, 300_001].enumerated() { makeRandomFile("\(plain)/f\(i)", size: size) }
        sh("cp -r \(plain) \(mnt)/tree")
        XCTAssertEqual(manifest(mnt + "/tree"), manifest(plain))
        try unmountP()
        try mountP()
        XCTAssertEqual(manifest(mnt + "/tree"), manifest(plain))
        let s = cmkfs(["status", pvol, "--json", "--vault-token-file", tokenFile])
        XCTAssertTrue(s.succeeded, "\(s)")
        let json = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(s.stdout.utf8)) as? [String: Any])
        let provider = try XCTUnwrap(json["provider"] as? [String: Any])
        XCTAssertEqual(provider["kind"] as? String, "vault")
        XCTAssertEqual(provider["key_id"] as? String, key)
        XCTAssertEqual(json["key_check"] as? String, "ok")
        try unmountP()
        let v = cmkfs(["audit", "verify", pvol, "--vault-token-file", tokenFile])
        XCTAssertTrue(v.succeeded && v.stdout.contains("chain intact"), "\(v)")
        let f = cmkfs(["fsck", pvol, "--vault-token-file", tokenFile])
        XCTAssertTrue(f.succeeded, "\(f)")
    }

    // MARK: rotation and purge

    func testRotateRewrapsInVaultAndPurgeRaisesMinDecryptionVersion() throws {
        try initVault()
        try mountP()
        py(KeyLifecycleTests.populate, [mnt, "300"])
        let r = cmkfs(["key", "rotate", pvol, "--json", "--vault-token-file", tokenFile], timeout: 300)
        XCTAssertTrue(r.succeeded, "rotate: \(r)")
        let report = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        XCTAssertEqual(report["failed"] as? Int, 0, r.stdout)
        XCTAssertEqual(report["active_version"] as? Int, 2, r.stdout)
        XCTAssertEqual(try keyInfo()["latest_version"] as? Int, 2)
        let list = cmkfs(["key", "list", pvol, "--json", "--vault-token-file", tokenFile])
        let versions = ((try? JSONSerialization.jsonObject(with: Data(list.stdout.utf8)) as? [String: Any])?["versions"] as? [[String: Any]]) ?? []
        XCTAssertEqual(versions.map { $0["edeks"] as? Int }, [0, 300], list.stdout)
        let purge = cmkfs(["key", "purge", pvol, "--version", "1", "--vault-token-file", tokenFile])
        XCTAssertTrue(purge.succeeded, "purge: \(purge)")
        let info = try keyInfo()
        XCTAssertEqual(info["min_decryption_version"] as? Int, 2, "purge raised min_decryption_version past v1")
        XCTAssertEqual(info["min_available_version"] as? Int, 2, "and trimmed v1 for good")
        try unmountP()
        try mountP()
        py(KeyLifecycleTests.checkAll, [mnt, "300"])
        sh("echo after > \(mnt)/new && grep -q after \(mnt)/new")
        try unmountP()
        let v = cmkfs(["audit", "verify", pvol, "--vault-token-file", tokenFile])
        XCTAssertTrue(v.succeeded, "\(v)")
    }

    // MARK: the audit anchor in Vault KV

    /// With `--vault-kv-mount`, Vault keeps the audit log's anchor (the dev server's KV v2 at
    /// `secret/`): a log rolled back together with meta.db to an older consistent pair is named
    /// by `audit verify` (exit 12), and a mount on it chains a gap instead of re-basing.
    func testVaultKVAnchorNamesALogRolledBackWithMetaDB() throws {
        let token = try bao.volumeToken(key: key, anchorKV: "secret")
        try (token + "\n").write(toFile: tokenFile, atomically: true, encoding: .utf8)
        chmod(tokenFile, 0o600)
        let i = cmkfs(["init", pvol, "--kms", "vault", "--vault-addr", bao.address, "--vault-key", key,
                       "--vault-kv-mount", "secret", "--vault-token-file", tokenFile])
        XCTAssertTrue(i.succeeded, "\(i)")
        let volumeID = try XCTUnwrap((try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: pvol + "/cmkfs.volume")))
                                      as? [String: Any])?["volume_id"] as? String)
        let place = "Vault KV secret/cmkfs/audit-anchor/\(volumeID) at \(bao.address)"
        try mountP()
        sh("echo a > \(mnt)/f && cat \(mnt)/f > /dev/null")
        try unmountP()
        let stored = try bao.admin(.get, "secret/data/cmkfs/audit-anchor/\(volumeID)")
        XCTAssertNotNil((stored["data"] as? [String: Any])?["data"], "the anchor is in Vault: \(stored)")
        let ok = cmkfs(["audit", "verify", pvol, "--vault-token-file", tokenFile])
        XCTAssertTrue(ok.succeeded && ok.stdout.contains("anchor in \(place)") && ok.stdout.contains(" matches"), "\(ok)")
        let older = fx.root + "/older"
        sh("chattr -R -a \(pvol)/audit && mkdir -p \(older) && cp -a \(pvol)/audit \(older)/ && cp -a \(pvol)/meta.db* \(older)/")
        try mountP()
        sh("cat \(mnt)/f > /dev/null && cat \(mnt)/f > /dev/null")
        try unmountP()
        sh("chattr -R -a \(pvol)/audit && rm -rf \(pvol)/audit \(pvol)/meta.db* && cp -a \(older)/audit \(older)/meta.db* \(pvol)/")
        let r = cmkfs(["audit", "verify", pvol, "--vault-token-file", tokenFile])
        XCTAssertEqual(r.status, 12, "\(r)")
        XCTAssertTrue(r.stderr.contains("behind-anchor:") && r.stderr.contains("the anchor in \(place)"), r.stderr)
        try mountP()
        try unmountP()
        let after = cmkfs(["audit", "verify", pvol, "--vault-token-file", tokenFile])
        XCTAssertEqual(after.status, 12, "\(after)")
        XCTAssertTrue(after.stderr.contains("gap:") && after.stderr.contains("the anchor in \(place)"), after.stderr)
    }

    /// Without a KV mount (or before this change), Vault keeps no anchor and says so.
    func testWithoutAKVMountVaultKeepsNoAnchor() throws {
        try initVault()
        try mountP()
        try unmountP()
        let v = cmkfs(["audit", "verify", pvol, "--vault-token-file", tokenFile])
        XCTAssertTrue(v.succeeded, "\(v)")
        XCTAssertTrue((v.stdout + v.stderr).contains("keeps no anchor"), "\(v)")
    }

    // MARK: cmkfs key revoke / key enable

    /// `key revoke` raises the transit key's thresholds past the volume's versions (the held
    /// data is refused at once, EACCES), a mount is refused naming the disabled key and the way
    /// back, and `key enable` lowers them again.
    func testRevokeAndEnableThroughCmkfsMoveTheTransitThresholds() throws {
        try initVault()
        try mountP()
        sh("printf one > \(mnt)/a")
        let r = cmkfs(["key", "revoke", pvol, "--vault-token-file", tokenFile, "--json"])
        XCTAssertTrue(r.succeeded, "\(r)")
        XCTAssertGreaterThan(try keyInfo()["min_decryption_version"] as? Int ?? 0, 1, "revoke raised min_decryption_version past v1")
        let cut = fx.sh("cat \(mnt)/a")
        XCTAssertTrue(cut.stderr.contains("Permission denied"), "\(cut)")
        try unmountP()
        let m = cmkfs(["mount", pvol, mnt, "--vault-token-file", tokenFile])
        XCTAssertEqual(m.status, 5, "\(m)")
        XCTAssertTrue(m.stderr.contains("disabled") && m.stderr.contains("cmkfs key enable"), "\(m)")
        XCTAssertFalse(fx.isMounted(mnt))
        let e = cmkfs(["key", "enable", pvol, "--vault-token-file", tokenFile])
        XCTAssertTrue(e.succeeded, "\(e)")
        XCTAssertEqual(try keyInfo()["min_decryption_version"] as? Int, 1)
        try mountP()
        XCTAssertEqual(sh("cat \(mnt)/a"), "one")
        try unmountP()
        let v = cmkfs(["audit", "verify", pvol, "--vault-token-file", tokenFile])
        XCTAssertTrue(v.succeeded, "\(v)")
    }

    // MARK: the customer's kill switches

    /// Mounts a Vault volume, holds a file open with its key cached, then sends `switchOff` to
    /// Vault with the root token (the customer, in Vault: method, path, JSON body) and returns
    /// how long until the next read is refused with EACCES, or nil if it never is (30 s).
    /// `switchOff` is given the volume's token.
    func secondsUntilVaultCutsHeldFile(_ switchOff: (String) -> [(method: HTTPMethod, path: String, body: [String: Any]?)]) throws -> Double? {
        try initVault()
        try mountP(["--lease-renew", "300ms"])
        let token = try String(contentsOfFile: tokenFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        return try secondsUntilHeldFileIsCut(mnt + "/f", log: "mount.log: \(fx.mountLog(pvol))") {
            for request in switchOff(token) { _ = try bao.admin(request.method, request.path, request.body) }
        }
    }

    func testRevokingTheTokenCutsAHeldOpenFileWithinOneRenewal() throws {
        let seconds = try secondsUntilVaultCutsHeldFile { token in [(.post, "auth/token/revoke", ["token": token])] }
        if let seconds {
            XCTAssertLessThan(seconds, 10, "one renewal interval (300 ms) plus the sweep tick")
            report("Vault token revoked → held-open file cut", seconds: seconds)
        }
        // New opens are refused too, as a permission error.
        let r = fx.sh("cat \(mnt)/f")
        XCTAssertTrue(r.stderr.contains("Permission denied"), "\(r)")
    }

    func testRaisingMinDecryptionVersionCutsAHeldOpenFileWithinOneRenewal() throws {
        let seconds = try secondsUntilVaultCutsHeldFile { _ in [(.post, "transit/keys/\(self.key)/rotate", [:]),
                                                               (.post, "transit/keys/\(self.key)/config", ["min_decryption_version": 2])] }
        if let seconds {
            XCTAssertLessThan(seconds, 10)
            report("Vault min_decryption_version raised → held-open file cut", seconds: seconds)
        }
        // The customer lowers it again: the same mount reads again.
        try bao.admin(.post, "transit/keys/\(key)/config", ["min_decryption_version": 1])
        XCTAssertTrue(waitUntil(deadline: 10) { fx.sh("cat \(mnt)/f").stdout == "held" })
    }

    func testDeletingTheKeyCutsAHeldOpenFileWithinOneRenewal() throws {
        let seconds = try secondsUntilVaultCutsHeldFile { _ in
            self.sh("printf g > \(self.mnt)/g")
            return [(.post, "transit/keys/\(self.key)/config", ["deletion_allowed": true]), (.delete, "transit/keys/\(self.key)", nil)]
        }
        if let seconds {
            XCTAssertLessThan(seconds, 10)
            report("Vault key deleted → held-open file cut", seconds: seconds)
        }
        // A file not open before is refused as the kill switch too (EACCES), not as an outage.
        let r = fx.sh("cat \(mnt)/g")
        XCTAssertTrue(r.stderr.contains("Permission denied"), "\(r)")
    }

    // MARK: outages and wrong tokens

    func testServerDownGivesEIOOnUnopenedFilesWithoutAHang() throws {
        try initVault()
        try mountP()
        sh("echo x > \(mnt)/b")
        try unmountP()
        try mountP()
        bao.stop()
        let r = fx.sh("cat \(mnt)/b", timeout: 60)
        XCTAssertFalse(r.timedOut, "\(r)")
        XCTAssertTrue(r.stderr.contains("Input/output error"), "\(r)")
        XCTAssertLessThan(r.seconds, 15, "connection refused at once (plus the retries)")
        XCTAssertTrue(fx.mountLog(pvol).contains("cannot connect"), fx.mountLog(pvol))
        // And a new mount is refused with exit 5, naming the server.
        try unmountP()
        let m = cmkfs(["mount", pvol, mnt, "--vault-token-file", tokenFile])
        XCTAssertEqual(m.status, 5, "\(m)")
        XCTAssertTrue(m.stderr.contains(bao.address), "\(m)")
        XCTAssertTrue(m.stderr.contains("cmkfs: hint: check that Vault at \(bao.address) is up and unsealed"), "\(m)")
    }

    func testWrongOrMissingTokenIsAClearErrorWithExit5() throws {
        try writeVolumeToken()
        let bad = fx.root + "/bad-token"
        try "hvs.not-a-token\n".write(toFile: bad, atomically: true, encoding: .utf8)
        chmod(bad, 0o600)
        let i = cmkfs(["init", pvol, "--kms", "vault", "--vault-addr", bao.address, "--vault-key", key, "--vault-token-file", bad])
        XCTAssertEqual(i.status, 5, "\(i)")
        // Said as what it is: the token refused (permission denied), not a disabled key.
        XCTAssertTrue(i.stderr.contains("refused the token") && i.stderr.contains("permission denied")
                      && i.stderr.contains("invalid, expired or revoked"), "\(i)")
        XCTAssertFalse(i.stderr.contains("disabled"), "\(i)")
        XCTAssertTrue(i.stderr.contains("cmkfs: hint: give a valid token with --vault-token-file"), "\(i)")
        XCTAssertFalse(i.stderr.contains("hvs.not-a-token"), "the token is never printed")
        XCTAssertFalse(FileManager.default.fileExists(atPath: pvol + "/cmkfs.volume"))
        // No token at all, and no terminal: refused, saying where a token comes from.
        let n = cmkfs(["init", pvol, "--kms", "vault", "--vault-addr", bao.address, "--vault-key", key])
        XCTAssertEqual(n.status, 5, "\(n)")
        XCTAssertTrue(n.stderr.contains("VAULT_TOKEN"), "\(n)")
        // A token file others can read is refused.
        chmod(tokenFile, 0o644)
        let o = cmkfs(["init", pvol, "--kms", "vault", "--vault-addr", bao.address, "--vault-key", key, "--vault-token-file", tokenFile])
        XCTAssertEqual(o.status, 5, "\(o)")
        XCTAssertTrue(o.stderr.contains("readable by other users"), "\(o)")
        chmod(tokenFile, 0o600)
        // A good volume mounted with a wrong token: exit 5, no mount.
        try initVault()
        let m = cmkfs(["mount", pvol, mnt, "--vault-token-file", bad])
        XCTAssertEqual(m.status, 5, "\(m)")
        XCTAssertTrue(m.stderr.contains("refused the token") && !m.stderr.contains("disabled"), "\(m)")
        XCTAssertFalse(fx.isMounted(mnt))
        // status says why in its JSON too.
        let s = cmkfs(["status", pvol, "--json", "--vault-token-file", bad])
        XCTAssertEqual(s.status, 5, "\(s)")
        let status = (try? JSONSerialization.jsonObject(with: Data(s.stdout.utf8))) as? [String: Any]
        XCTAssertEqual(status?["key_check_reason"] as? String, "denied", "\(s)")
    }
}
