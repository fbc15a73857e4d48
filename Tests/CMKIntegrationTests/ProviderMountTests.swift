import Foundation
import Glibc
import XCTest

/// Real mounts on the socket KMS and on a SoftHSM2 token: files round-trip, a wrong PIN fails
/// `mount` cleanly, and a KMS that dies or stops gives EIO on files whose keys are not in use —
/// promptly, never a hang — while files already open keep working.
///
/// The fixture's embedded volume is left alone; each test makes `root/pvol` on its provider.
/// The `cmkfs-kms` process is stopped and the token directory (under the fixture root) removed
/// in tearDown.
final class ProviderMountTests: SocketKMSTestCase {

    /// Runs cmkfs with extra environment variables, detached from any terminal (so a missing
    /// PIN can never turn into a prompt that waits).
    @discardableResult
    func cmkfs(_ arguments: [String], env: [String: String] = [:], timeout: TimeInterval = 60) -> ShellResult {
        let assignments = env.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
        return Shell.run("/usr/bin/setsid", ["-w", "/usr/bin/env"] + assignments + [MountFixture.binary] + arguments,
                         timeout: timeout, logDir: fx.logs, label: "cmkfs " + arguments.joined(separator: " "))
    }

    func startKMS(_ faults: [String] = []) throws -> KMSProcess {
        let k = KMSProcess(socket: fx.root + "/kms.sock", state: fx.root + "/kms-state", logPath: fx.logs + "/kms.log")
        try k.start(faults)
        kms = k
        return k
    }

    func makeSocketVolume(env: [String: String] = [:]) throws -> KMSProcess {
        let k = try startKMS()
        let r = cmkfs(["init", pvol, "--kms", "socket", "--kms-socket", k.socket], env: env)
        guard r.succeeded else { throw FixtureError("init --kms socket failed: \(r)") }
        return k
    }

    func mountP(env: [String: String] = [:], _ extra: [String] = []) throws {
        let r = cmkfs(["mount", pvol, mnt] + extra, env: env)
        guard r.succeeded else { throw FixtureError("mount failed: \(r)\nmount.log: \(fx.mountLog(pvol))") }
        XCTAssertTrue(fx.isMounted(mnt))
    }

    func unmountP() throws {
        let r = cmkfs(["unmount", mnt])
        guard r.succeeded else { throw FixtureError("unmount failed: \(r)") }
    }

    /// Writes a few files (sizes around block edges), checks them, remounts, checks again.
    func roundTrip(env: [String: String] = [:], mountArgs: [String] = []) throws {
        for (i, size) in [0, 1, 4095, 4097, 300_001].enumerated() { makeRandomFile("\(plain)/f\(i)", size: size) }
        sh("cp -r \(plain) \(mnt)/tree")
        XCTAssertEqual(manifest(mnt + "/tree"), manifest(plain))
        try unmountP()
        try mountP(env: env, mountArgs)
        XCTAssertEqual(manifest(mnt + "/tree"), manifest(plain))
    }

    // MARK: socket KMS

    func testSocketMountRoundTripsFiles() throws {
        let k = try makeSocketVolume()
        try mountP()
        try roundTrip()
        let r = cmkfs(["status", pvol, "--json"])
        XCTAssertTrue(r.succeeded, "\(r)")
        let json = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        let provider = try XCTUnwrap(json["provider"] as? [String: Any])
        XCTAssertEqual(provider["kind"] as? String, "socket")
        XCTAssertEqual(provider["kms_socket"] as? String, k.socket)
        XCTAssertEqual(json["key_check"] as? String, "ok")
        // The volume records how to reach the KMS and the key id, nothing secret.
        let config = try String(contentsOfFile: pvol + "/cmkfs.volume", encoding: .utf8)
        XCTAssertTrue(config.contains("\"kms_socket\""), config)
        XCTAssertTrue(k.keyCommand(["list"], logDir: fx.logs).stdout.contains(provider["key_id"] as? String ?? "?"))
    }

    func testKilledKMSGivesEIOOnUnopenedFilesAndOpenFilesKeepWorking() throws {
        let k = try makeSocketVolume()
        try mountP()
        sh("echo kept-open > \(mnt)/a && echo never-opened > \(mnt)/b")
        // A fresh mount: no key is in memory until a file is opened.
        try unmountP()
        try mountP()
        let r = python("""
        import errno, os, signal, sys, time
        mnt, pid = sys.argv[1], int(sys.argv[2])
        fa = os.open(mnt + "/a", os.O_RDONLY)
        assert os.pread(fa, 100, 0) == b"kept-open\\n"
        os.kill(pid, signal.SIGKILL)
        def gone():
            try:
                return open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()[0] in "ZX"
            except FileNotFoundError:
                return True
        deadline = time.monotonic() + 30
        while not gone():
            assert time.monotonic() < deadline, "the KMS outlived SIGKILL"
            time.sleep(0.01)
        for name, flags in (("b", os.O_RDONLY), ("new", os.O_WRONLY | os.O_CREAT)):
            start = time.time()
            try:
                os.close(os.open(mnt + "/" + name, flags, 0o644))
                sys.exit("opening %s worked without the KMS" % name)
            except OSError as e:
                assert e.errno == errno.EIO, (name, e)
            assert time.time() - start < 5, "took %.1f s" % (time.time() - start)
        assert os.pread(fa, 100, 0) == b"kept-open\\n", "the open file stopped working"
        os.close(fa)
        print("ok")
        """, [mnt, String(k.pid ?? -1)], timeout: 60)
        XCTAssertTrue(r.succeeded && r.stdout.contains("ok"), "\(r)\nmount.log: \(fx.mountLog(pvol))")
        XCTAssertTrue(fx.mountLog(pvol).contains("unreachable") || fx.mountLog(pvol).contains("closed the connection"),
                      "the log names the cause: \(fx.mountLog(pvol))")
        // The KMS comes back: the same mount reconnects.
        try k.start()
        XCTAssertEqual(sh("cat \(mnt)/b"), "never-opened\n")
    }

    func testStoppedKMSGivesEIOWithinTheTimeoutNotAHang() throws {
        let k = try makeSocketVolume()
        try mountP(env: ["CMKFS_KMS_TIMEOUT_MS": "1000"])
        sh("echo x > \(mnt)/b")
        try unmountP()
        try mountP(env: ["CMKFS_KMS_TIMEOUT_MS": "1000"])
        k.pause()
        let r = fx.sh("cat \(mnt)/b", timeout: 30)
        XCTAssertFalse(r.timedOut, "\(r)")
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("Input/output error"), "\(r)")
        XCTAssertLessThan(r.seconds, 10, "bounded by the 1 s KMS timeout (plus a retry or two)")
        k.signal(SIGCONT)
        XCTAssertEqual(sh("cat \(mnt)/b"), "x\n")
    }

    func testKeyDisabledByTheCustomerGivesEACCES() throws {
        let k = try makeSocketVolume()
        try mountP()
        sh("echo secret > \(mnt)/b")
        try unmountP()
        try mountP()
        let keyID = try XCTUnwrap(k.keyCommand(["list"], logDir: fx.logs).stdout.split(separator: " ").first.map(String.init))
        XCTAssertTrue(k.keyCommand(["disable", keyID], logDir: fx.logs).succeeded)
        let r = fx.sh("cat \(mnt)/b")
        XCTAssertTrue(r.stderr.contains("Permission denied"), "\(r)")
        XCTAssertTrue(k.keyCommand(["enable", keyID], logDir: fx.logs).succeeded)
        XCTAssertEqual(sh("cat \(mnt)/b"), "secret\n")
    }

    func testSocketErrorsAtInitAndMount() throws {
        // Nothing listening: init fails with exit 5, says unreachable, leaves nothing behind.
        let r = cmkfs(["init", pvol, "--kms", "socket", "--kms-socket", fx.root + "/nobody.sock"])
        XCTAssertEqual(r.status, 5, "\(r)")
        XCTAssertTrue(r.stderr.contains("cmkfs: error: the KMS at \(fx.root)/nobody.sock is unreachable"), "\(r)")
        XCTAssertTrue(r.stderr.contains("cmkfs: hint: start the KMS"), "\(r)")
        XCTAssertFalse(FileManager.default.fileExists(atPath: pvol))
        // A KMS that refuses everything: mount fails with exit 5 and says so.
        let k = try makeSocketVolume()
        _ = k.stop()
        try k.start(["--refuse-all"])
        let m = cmkfs(["mount", pvol, mnt])
        XCTAssertEqual(m.status, 5, "\(m)")
        XCTAssertTrue(m.stderr.contains("is refusing requests"), "\(m)")
        XCTAssertFalse(fx.isMounted(mnt))
        // An unknown key id at init.
        _ = k.stop()
        try k.start()
        let u = cmkfs(["init", fx.root + "/pvol2", "--kms", "socket", "--kms-socket", k.socket, "--key-id", "mk-nope"])
        XCTAssertEqual(u.status, 5, "\(u)")
        XCTAssertTrue(u.stderr.contains("has no master key mk-nope"), "\(u)")
    }

    /// At mount, a disabled or destroyed master key is exit 5 with a message saying which.
    func testDisabledAndDestroyedKeysFailMountWithExit5() throws {
        let k = try makeSocketVolume()
        let keyID = try XCTUnwrap(k.keyCommand(["list"], logDir: fx.logs).stdout.split(separator: " ").first.map(String.init))
        XCTAssertTrue(k.keyCommand(["disable", keyID], logDir: fx.logs).succeeded)
        let d = cmkfs(["mount", pvol, mnt])
        XCTAssertEqual(d.status, 5, "\(d)")
        XCTAssertTrue(d.stderr.contains("master key \(keyID) of \(pvol) is disabled in the KMS at \(k.socket)"), "\(d)")
        XCTAssertTrue(d.stderr.contains("cmkfs: hint: the key owner must enable it: cmkfs-kms key enable \(keyID)"), "\(d)")
        XCTAssertTrue(k.keyCommand(["destroy", keyID, "--force"], logDir: fx.logs).succeeded)
        let x = cmkfs(["mount", pvol, mnt])
        XCTAssertEqual(x.status, 5, "\(x)")
        XCTAssertTrue(x.stderr.contains("was destroyed; its data cannot be decrypted"), "\(x)")
        XCTAssertFalse(fx.isMounted(mnt))
    }

    /// The audit key is wrapped by the volume's own provider: the log verifies through the socket KMS.
    func testAuditLogVerifiesOnTheSocketKMS() throws {
        _ = try makeSocketVolume()
        try mountP()
        sh("echo audited > \(mnt)/f && cat \(mnt)/f > /dev/null")
        try unmountP()
        let v = cmkfs(["audit", "verify", pvol])
        XCTAssertTrue(v.succeeded && v.stdout.contains("chain intact"), "\(v)")
        let show = cmkfs(["audit", "show", pvol, "--file", "/f", "--json"])
        XCTAssertTrue(show.succeeded && show.stdout.contains("\"create\""), "\(show)")
    }

    // MARK: rotation and purge through each provider

    /// Rotates a mounted volume with 300 files, purges version 1, and checks every file after a
    /// remount and the audit log: the same commands whatever holds the master key.
    func rotateAndPurge(env: [String: String] = [:], access: [String] = []) throws {
        try mountP(env: env, access)
        py(KeyLifecycleTests.populate, [mnt, "300"])
        let r = cmkfs(["key", "rotate", pvol, "--json"] + access, env: env, timeout: 300)
        XCTAssertTrue(r.succeeded, "rotate: \(r)")
        print("[cmkfs-it] rotate on \(name): \(r.stdout.replacingOccurrences(of: "\n", with: " "))")
        let list = cmkfs(["key", "list", pvol, "--json"] + access, env: env)
        let versions = ((try? JSONSerialization.jsonObject(with: Data(list.stdout.utf8)) as? [String: Any])?["versions"] as? [[String: Any]]) ?? []
        XCTAssertEqual(versions.map { $0["state"] as? String }, ["deactivated", "active"], list.stdout)
        XCTAssertEqual(versions.map { $0["edeks"] as? Int }, [0, 300], list.stdout)
        let purge = cmkfs(["key", "purge", pvol, "--version", "1"] + access, env: env)
        XCTAssertTrue(purge.succeeded, "purge: \(purge)")
        try unmountP()
        try mountP(env: env, access)
        py(KeyLifecycleTests.checkAll, [mnt, "300"])
        sh("echo after > \(mnt)/new && cat \(mnt)/new | grep -q after")
        try unmountP()
        let v = cmkfs(["audit", "verify", pvol] + access, env: env)
        XCTAssertTrue(v.succeeded, "\(v)")
    }

    func testRotateAndPurgeOnTheSocketKMS() throws {
        _ = try makeSocketVolume()
        try rotateAndPurge()
    }

    func testRotateAndPurgeOnPKCS11() throws {
        let (_, env, pinFile) = try makeToken()
        XCTAssertTrue(initPKCS11(env, pinFile: pinFile).succeeded)
        try rotateAndPurge(env: env, access: ["--pin-file", pinFile])
    }

    // MARK: leasing against the socket KMS

    /// When the mount at `volume` last checked its provider successfully (`cache stats`), if it did.
    func lastRenewal(_ volume: String) -> Date? {
        let now = Date()
        let r = fx.cmkfs(["cache", "stats", volume, "--json"])
        guard r.succeeded, let stats = try? JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any],
              let provider = stats["provider"] as? [String: Any], provider["state"] as? String == "ok",
              let ago = (provider["checked_s_ago"] as? NSNumber)?.doubleValue else { return nil }
        return now.addingTimeInterval(-ago)
    }

    /// Waits until the mount at `volume` has renewed a lease with its provider since `since`
    /// (`cache stats`: provider `ok`, checked after it).
    func waitForRenewal(_ volume: String, after since: Date, deadline: TimeInterval = 30) -> Bool {
        waitUntil(deadline: deadline, interval: 0.05) {
            let elapsed = Date().timeIntervalSince(since)
            let r = fx.cmkfs(["cache", "stats", volume, "--json"])
            guard r.succeeded, let stats = try? JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any],
                  let provider = stats["provider"] as? [String: Any], provider["state"] as? String == "ok",
                  let ago = (provider["checked_s_ago"] as? NSNumber)?.doubleValue else { return false }
            return ago < elapsed
        }
    }

    /// While the KMS is unreachable, cached keys serve until their maximum lifetime, uncached
    /// ones fail at once, and after the lifetime all fail.
    func testUnreachableKMSServesCachedKeysUntilTheirLifetimeThenFails() throws {
        let k = try startKMS()
        XCTAssertTrue(fx.cmkfs(["init", pvol, "--kms", "socket", "--kms-socket", k.socket]).succeeded)
        let mountArgs = ["mount", pvol, mnt, "--cache-max-lifetime", "3s", "--lease-renew", "250ms", "--cache-idle-ttl", "1h"]
        XCTAssertTrue(fx.cmkfs(mountArgs).succeeded)
        sh("printf cached > \(mnt)/a && printf uncached > \(mnt)/b")
        XCTAssertTrue(fx.cmkfs(["cache", "flush", pvol]).succeeded)
        let loaded = Date()
        // The listing caches the name key again (an open's audit path is joined from noted
        // names and no longer decrypts one), the cat a's data key; b's stays out.
        XCTAssertEqual(sh("ls \(mnt) > /dev/null && cat \(mnt)/a"), "cached", "a's key and the name key are cached again, b's is not")
        XCTAssertTrue(waitForRenewal(pvol, after: loaded), "no successful renewal of a's key: \(fx.mountLog(pvol))")
        // A renewal the test saw: the last one before the kill is this one or later, so the
        // lifetime runs out 3 s after it at the earliest (a renewal thread running late on a
        // loaded machine moves the end closer to the kill, not closer to this).
        let renewedBy = try XCTUnwrap(lastRenewal(pvol), "cache stats names no successful provider check")
        k.kill9()
        let killedAt = Date()
        XCTAssertEqual(sh("cat \(mnt)/a"), "cached", "a cached key keeps serving while the KMS is down")
        let b = fx.sh("cat \(mnt)/b")
        XCTAssertFalse(b.succeeded)
        XCTAssertTrue(b.stderr.contains("Input/output error"), "\(b)")
        // Past the lifetime (counted from the last successful renewal) every read fails.
        var failedAt: Date?
        waitUntil(deadline: 30, interval: 0.1) {
            guard !fx.sh("cat \(mnt)/a").succeeded else { return false }
            failedAt = Date()
            return true
        }
        let seconds = try XCTUnwrap(failedAt, "a cached key still served 30 s after the KMS died (lifetime 3 s, idle TTL 1 h)").timeIntervalSince(killedAt)
        XCTAssertGreaterThan(failedAt!.timeIntervalSince(renewedBy), 2.0, "served for about the lifetime after a renewal, not less")
        XCTAssertLessThan(seconds, 3 + 5, "the 3 s lifetime, with room for a loaded machine (not the 1 h idle TTL)")
        report("KMS killed → cached key stops serving", seconds: seconds)
        let stats = fx.cmkfs(["cache", "stats", pvol, "--json"])
        XCTAssertTrue(stats.stdout.contains("\"unreachable\""), stats.stdout)
        XCTAssertTrue(fx.mountLog(pvol).contains("renew failed"), fx.mountLog(pvol))
        // The KMS comes back: new opens work again.
        try k.start()
        XCTAssertEqual(sh("cat \(mnt)/a \(mnt)/b"), "cacheduncached")
    }

    /// The value of `series` in the mount's `cmkfs metrics`, or nil.
    func metric(_ series: String, _ volume: String) -> Double? {
        let r = fx.cmkfs(["metrics", volume])
        guard r.succeeded else { return nil }
        return r.stdout.split(separator: "\n").lazy.compactMap { row -> Double? in
            guard row.hasPrefix(series + " ") else { return nil }
            return Double(row.dropFirst(series.count + 1))
        }.first
    }

    /// After a `cache flush`, an open that leases its data key again (with no lookup: the
    /// kernel holds the entry) leases the name key again too, in the background; so once the
    /// KMS is unreachable, path lookups keep working for as long as the leases taken while it
    /// was up, instead of failing (EIO) as soon as the kernel's entry expires.
    func testAnOpenAfterAFlushLeasesTheNameKeyAgainSoLookupsOutliveTheKMS() throws {
        let k = try startKMS()
        XCTAssertTrue(fx.cmkfs(["init", pvol, "--kms", "socket", "--kms-socket", k.socket]).succeeded)
        XCTAssertTrue(fx.cmkfs(["mount", pvol, mnt, "--cache-max-lifetime", "60s", "--lease-renew", "250ms", "--cache-idle-ttl", "1h"]).succeeded)
        sh("printf cached > \(mnt)/a")
        let held = open(mnt + "/a", O_RDONLY | O_CLOEXEC)
        XCTAssertGreaterThanOrEqual(held, 0, "open \(mnt)/a: errno \(errno)")
        defer { if held >= 0 { close(held) } }
        XCTAssertTrue(fx.cmkfs(["cache", "flush", pvol]).succeeded)
        XCTAssertEqual(metric("cmkfs_name_key_cached", pvol), 0, "the flush dropped the name key")
        let flushed = Date()
        // An open through /proc/self/fd reaches the inode without a LOOKUP: only its data key is asked for.
        let reopened = open("/proc/self/fd/\(held)", O_RDONLY | O_CLOEXEC)
        XCTAssertGreaterThanOrEqual(reopened, 0, "reopen: errno \(errno)")
        defer { if reopened >= 0 { close(reopened) } }
        var buffer = [UInt8](repeating: 0, count: 16)
        XCTAssertEqual(read(reopened, &buffer, buffer.count), 6, "the reopened file reads with its data key leased again")
        XCTAssertTrue(waitUntil(deadline: 20, interval: 0.05) { metric("cmkfs_name_key_cached", pvol) == 1 },
                      "the name key was not leased again after the open's key miss: \(fx.mountLog(pvol))")
        // Recorded as a key use, like any unwrap of the name key: the mount's, then this one.
        var records = ""
        XCTAssertTrue(waitUntil(deadline: 10, interval: 0.1) {
            records = fx.cmkfs(["audit", "show", pvol, "--event", "name-key", "--json"]).stdout
            return records.split(separator: "\n").filter { $0.contains("\"ok\"") }.count == 2
        }, "the mount's and the background lease's name-key records: \(records)")
        XCTAssertTrue(waitForRenewal(pvol, after: flushed), "no successful renewal: \(fx.mountLog(pvol))")
        k.kill9()
        // Names work while the leases taken before the KMS went are valid: a name the kernel never
        // looked up (a fresh LOOKUP), a listing, and the file through a new path walk.
        let fresh = fx.sh("stat \(mnt)/never-looked-up")
        XCTAssertTrue(fresh.stderr.contains("No such file or directory"), "a fresh lookup needs the name key: \(fresh)")
        XCTAssertEqual(sh("ls \(mnt)"), "a\n")
        XCTAssertEqual(sh("cat \(mnt)/a"), "cached")
    }

    /// The customer disables the key in `cmkfs-kms` (not through cmkfs): a file held open with its
    /// key cached fails its next read within one renewal interval.
    func testKeyDisabledInCmkfsKMSCutsAnOpenFileWithinOneRenewal() throws {
        let k = try startKMS()
        XCTAssertTrue(fx.cmkfs(["init", pvol, "--kms", "socket", "--kms-socket", k.socket]).succeeded)
        XCTAssertTrue(fx.cmkfs(["mount", pvol, mnt, "--lease-renew", "300ms"]).succeeded)
        let keyID = try XCTUnwrap(k.keyCommand(["list"], logDir: fx.logs).stdout.split(separator: " ").first.map(String.init))
        let cut = try secondsUntilHeldFileIsCut(mnt + "/f", log: "mount.log: \(fx.mountLog(pvol))") {
            XCTAssertTrue(k.keyCommand(["disable", keyID], logDir: fx.logs).succeeded)
        }
        if let seconds = cut {
            // One renewal interval (300 ms) plus the sweep tick, with room for a loaded machine;
            // without the renewal's check the held-open file would keep its key for the 1 h lifetime.
            XCTAssertLessThan(seconds, 10, "one renewal interval (300 ms) plus the sweep tick")
            report("key disabled in cmkfs-kms → held-open file cut", seconds: seconds)
        }
        XCTAssertTrue(k.keyCommand(["enable", keyID], logDir: fx.logs).succeeded)
        XCTAssertEqual(sh("cat \(mnt)/f"), "held", "a new open works once the customer enables the key")
    }

    // MARK: PKCS#11 (SoftHSM2)

    /// At mount: the recorded token or key label no longer exists on the module.
    func testPKCS11TokenOrKeyLabelGoneAtMount() throws {
        let (_, env, pinFile) = try makeToken()
        XCTAssertTrue(initPKCS11(env, pinFile: pinFile, extra: ["--key-label", "kept"]).succeeded)
        let configPath = pvol + "/cmkfs.volume"
        let original = try String(contentsOfFile: configPath, encoding: .utf8)
        try original.replacingOccurrences(of: "\"key_id\" : \"kept\"", with: "\"key_id\" : \"gone\"")
            .write(toFile: configPath, atomically: true, encoding: .utf8)
        let k = cmkfs(["mount", pvol, mnt, "--pin-file", pinFile], env: env)
        XCTAssertEqual(k.status, 5, "\(k)")
        XCTAssertTrue(k.stderr.contains("cmkfs: error: PKCS#11 token 'cmkfs-it' has no master key gone"), "\(k)")
        XCTAssertTrue(k.stderr.contains("cmkfs: hint: check that token 'cmkfs-it' holds a secret key labelled gone.v1"), "\(k)")
        try original.replacingOccurrences(of: "\"token_label\" : \"cmkfs-it\"", with: "\"token_label\" : \"elsewhere\"")
            .write(toFile: configPath, atomically: true, encoding: .utf8)
        let t = cmkfs(["mount", pvol, mnt, "--pin-file", pinFile], env: env)
        XCTAssertEqual(t.status, 5, "\(t)")
        XCTAssertTrue(t.stderr.contains("no PKCS#11 token labelled 'elsewhere' (tokens: 'cmkfs-it')"), "\(t)")
        XCTAssertFalse(fx.isMounted(mnt))
    }

    /// …and through a PKCS#11 token, with the PIN from a file.
    func testAuditLogVerifiesOnPKCS11() throws {
        let (_, env, pinFile) = try makeToken()
        XCTAssertTrue(initPKCS11(env, pinFile: pinFile).succeeded)
        try mountP(env: env, ["--pin-file", pinFile])
        sh("echo audited > \(mnt)/f && cat \(mnt)/f > /dev/null")
        try unmountP()
        let v = cmkfs(["audit", "verify", pvol, "--pin-file", pinFile], env: env)
        XCTAssertTrue(v.succeeded && v.stdout.contains("chain intact"), "\(v)")
        let noPIN = cmkfs(["audit", "verify", pvol], env: env)
        XCTAssertEqual(noPIN.status, 5, "verifying needs the token: \(noPIN)")
    }

    func makeToken() throws -> (SoftHSMTokens, [String: String], String) {
        let tokens = try SoftHSMTokens(root: fx.root + "/hsm")
        try tokens.initToken("cmkfs-it", logDir: fx.logs)
        let pinFile = fx.root + "/hsm/pin"
        try SoftHSMTokens.writePINFile(pinFile)
        return (tokens, tokens.environment, pinFile)
    }

    func initPKCS11(_ env: [String: String], pinFile: String, token: String = "cmkfs-it", extra: [String] = []) -> ShellResult {
        cmkfs(["init", pvol, "--kms", "pkcs11", "--pkcs11-module", SoftHSMTokens.module, "--token", token,
               "--pin-file", pinFile] + extra, env: env)
    }

    func testPKCS11MountRoundTripsFiles() throws {
        let (_, env, pinFile) = try makeToken()
        let r = initPKCS11(env, pinFile: pinFile, extra: ["--key-label", "vol-key"])
        XCTAssertTrue(r.succeeded, "\(r)")
        let config = try String(contentsOfFile: pvol + "/cmkfs.volume", encoding: .utf8)
        XCTAssertTrue(config.contains("\"token_label\" : \"cmkfs-it\"") && config.contains("\"key_id\" : \"vol-key\""), config)
        XCTAssertFalse(config.contains(SoftHSMTokens.userPIN), "no PIN in the volume")
        try mountP(env: env, ["--pin-file", pinFile])
        // The daemon got the PIN through a pipe: not in its argv, not in its environment.
        let pid = try XCTUnwrap(fx.lockPID(pvol))
        let cmdline = String(decoding: FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") ?? Data(), as: UTF8.self)
        let environ = String(decoding: FileManager.default.contents(atPath: "/proc/\(pid)/environ") ?? Data(), as: UTF8.self)
        XCTAssertTrue(cmdline.contains("--pin-fd"), cmdline)
        XCTAssertFalse(cmdline.contains(SoftHSMTokens.userPIN) || cmdline.contains(pinFile), cmdline)
        XCTAssertFalse(environ.contains("CMKFS_PKCS11_PIN"), "the PIN is not in the daemon's environment")
        // The remount inside takes the PIN from the environment variable instead.
        try roundTrip(env: env.merging(["CMKFS_PKCS11_PIN": SoftHSMTokens.userPIN]) { a, _ in a })
        let pid2 = try XCTUnwrap(fx.lockPID(pvol))
        let environ2 = String(decoding: FileManager.default.contents(atPath: "/proc/\(pid2)/environ") ?? Data(), as: UTF8.self)
        XCTAssertFalse(environ2.contains("CMKFS_PKCS11_PIN"), "the variable is not passed on to the daemon")
        let s = cmkfs(["status", pvol, "--json", "--pin-file", pinFile], env: env)
        XCTAssertTrue(s.stdout.contains("\"key_check\" : \"ok\""), "\(s)")
        // Without a PIN, status still answers and says what it needs.
        let n = cmkfs(["status", pvol], env: env)
        XCTAssertTrue(n.status == 5 && n.stdout.contains("PIN"), "\(n)")
    }

    func testWrongPINFailsMountCleanly() throws {
        let (_, env, pinFile) = try makeToken()
        XCTAssertTrue(initPKCS11(env, pinFile: pinFile).succeeded)
        let badPIN = fx.root + "/hsm/bad-pin"
        try SoftHSMTokens.writePINFile(badPIN, pin: "0000")
        let before = snapshot(pvol)
        let r = cmkfs(["mount", pvol, mnt, "--pin-file", badPIN], env: env)
        XCTAssertEqual(r.status, 5, "\(r)")
        let lines = r.stderr.split(separator: "\n")
        XCTAssertEqual(lines.first, "cmkfs: error: wrong PIN for PKCS#11 token 'cmkfs-it' (CKR_PIN_INCORRECT)", "\(r)")
        XCTAssertTrue(lines.count == 2 && lines[1].hasPrefix("cmkfs: hint: "), "\(r)")
        XCTAssertEqual(r.stdout, "")
        XCTAssertFalse(fx.isMounted(mnt))
        XCTAssertEqual(snapshot(pvol), before, "a failed mount changes nothing")
        // No PIN at all (no file, no variable, no terminal): exit 5 saying so, no prompt, no hang.
        let none = cmkfs(["mount", pvol, mnt], env: env, timeout: 30)
        XCTAssertFalse(none.timedOut)
        XCTAssertEqual(none.status, 5, "\(none)")
        XCTAssertTrue(none.stderr.contains("PIN of PKCS#11 token 'cmkfs-it' is needed"), "\(none)")
        XCTAssertEqual(snapshot(pvol), before)
        // The refusals could not be chained (the audit key is behind the token): they wait in
        // denials.pending, and the next mount chains them with their original time.
        let pending = (try? String(contentsOfFile: pvol + "/audit/denials.pending", encoding: .utf8)) ?? ""
        XCTAssertTrue(pending.contains("mount-denied") && pending.contains("CKR_PIN_INCORRECT"), pending)
        try mountP(env: env, ["--pin-file", pinFile])
        try unmountP()
        XCTAssertFalse(FileManager.default.fileExists(atPath: pvol + "/audit/denials.pending"))
        let denied = cmkfs(["audit", "show", pvol, "--event", "mount-denied", "--json"], env: env)
        XCTAssertTrue(denied.stdout.contains("\"denied\"") && denied.stdout.contains("CKR_PIN_INCORRECT")
                      && denied.stdout.contains("chained late"), "\(denied)")
        // Chained with the login uid of whoever ran the refused mount, like any command's record.
        let loginUID = try XCTUnwrap(UInt32(try String(contentsOfFile: "/proc/self/loginuid", encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines)))
        let records = denied.stdout.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        XCTAssertFalse(records.isEmpty, "\(denied)")
        XCTAssertEqual(records.map { ($0["login_uid"] as? NSNumber)?.uint32Value }, records.map { _ in loginUID }, "\(denied)")
        let v = cmkfs(["audit", "verify", pvol, "--pin-file", pinFile], env: env)
        XCTAssertTrue(v.succeeded, "\(v)")
    }

    /// The kill switch on an HSM volume: `cmkfs key revoke` turns off CKA_ENCRYPT/CKA_DECRYPT on the
    /// token (from another process than the mount), opens fail with EACCES; `key enable` undoes it.
    func testPKCS11RevokeAndEnableThroughTheToken() throws {
        let (_, env, pinFile) = try makeToken()
        XCTAssertTrue(initPKCS11(env, pinFile: pinFile).succeeded)
        try mountP(env: env, ["--pin-file", pinFile])
        sh("echo hsm-secret > \(mnt)/f")
        try unmountP()
        try mountP(env: env, ["--pin-file", pinFile])
        let revoke = cmkfs(["key", "revoke", pvol, "--pin-file", pinFile], env: env)
        XCTAssertTrue(revoke.succeeded, "\(revoke)")
        let denied = fx.sh("cat \(mnt)/f")
        XCTAssertTrue(denied.stderr.contains("Permission denied"), "\(denied)\nmount.log: \(fx.mountLog(pvol))")
        // While disabled on the token the volume does not mount: exit 5, saying so.
        try unmountP()
        let refused = cmkfs(["mount", pvol, mnt, "--pin-file", pinFile], env: env)
        XCTAssertEqual(refused.status, 5, "\(refused)")
        XCTAssertTrue(refused.stderr.contains("is disabled in PKCS#11 token 'cmkfs-it'"), "\(refused)")
        XCTAssertTrue(refused.stderr.contains("cmkfs: hint: the HSM administrator must allow encrypt/decrypt"), "\(refused)")
        let enable = cmkfs(["key", "enable", pvol, "--pin-file", pinFile], env: env)
        XCTAssertTrue(enable.succeeded, "\(enable)")
        try mountP(env: env, ["--pin-file", pinFile])
        XCTAssertEqual(sh("cat \(mnt)/f"), "hsm-secret\n")
        // Without any PIN the kill switch says what it needs instead of hanging at a prompt.
        let noPIN = cmkfs(["key", "revoke", pvol], env: env, timeout: 30)
        XCTAssertEqual(noPIN.status, 5, "\(noPIN)")
        XCTAssertTrue(noPIN.stderr.contains("PIN of PKCS#11 token 'cmkfs-it' is needed"), "\(noPIN)")
    }

    func testPKCS11InitErrors() throws {
        let (_, env, pinFile) = try makeToken()
        let badPIN = fx.root + "/hsm/bad-pin"
        try SoftHSMTokens.writePINFile(badPIN, pin: "0000")
        let cases: [(args: [String], pinFile: String, token: String, expect: String)] = [
            ([], badPIN, "cmkfs-it", "wrong PIN for PKCS#11 token 'cmkfs-it'"),
            ([], pinFile, "no-such-token", "no PKCS#11 token labelled 'no-such-token' (tokens: 'cmkfs-it')"),
            (["--pkcs11-module", fx.root + "/missing.so"], pinFile, "cmkfs-it", "the PKCS#11 module \(fx.root)/missing.so does not exist"),
            ([], fx.root + "/no-pin-file", "cmkfs-it", "cannot read the PIN file"),
        ]
        for c in cases {
            var args = ["init", pvol, "--kms", "pkcs11", "--pkcs11-module", SoftHSMTokens.module, "--token", c.token, "--pin-file", c.pinFile]
            args += c.args
            let r = cmkfs(args, env: env)
            XCTAssertEqual(r.status, 5, "\(r)")
            XCTAssertTrue(r.stderr.hasPrefix("cmkfs: error: \(c.expect)"), "\(r)")
            XCTAssertTrue(r.stderr.contains("\ncmkfs: hint: "), "\(r)")
            XCTAssertFalse(FileManager.default.fileExists(atPath: pvol), "init left \(pvol) behind")
        }
    }
}
