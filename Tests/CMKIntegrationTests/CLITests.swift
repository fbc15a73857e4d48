import Foundation
import XCTest

/// The CLI's failures: each has its documented exit code, a `cmkfs: error:` line, and leaves
/// the volume (and anything else it was pointed at) exactly as it was, byte for byte.
final class CLITests: IntegrationTestCase {
    override var mountsInSetUp: Bool { false }

    /// Runs cmkfs with `arguments`, expecting exit `code` and an error line (containing
    /// `mentioning` if given), with every directory in `unchanged` identical before and after.
    @discardableResult
    func assertFails(_ arguments: [String], exit code: Int32, mentioning: String? = nil, unchanged: [String],
                     file: StaticString = #filePath, line: UInt = #line) -> ShellResult {
        let before = unchanged.map { snapshot($0, file: file, line: line) }
        let r = fx.cmkfs(arguments)
        XCTAssertFalse(r.timedOut, "\(r)", file: file, line: line)
        XCTAssertEqual(r.status, code, "exit code of \(r)", file: file, line: line)
        let lines = r.stderr.split(separator: "\n")
        XCTAssertTrue(lines.contains { $0.hasPrefix("cmkfs: error: ") } || code == 64, "no `cmkfs: error:` line: \(r)", file: file, line: line)
        if let mentioning {
            XCTAssertTrue(r.stderr.contains(mentioning), "stderr should mention \"\(mentioning)\": \(r)", file: file, line: line)
        }
        XCTAssertEqual(r.stdout, "", "a failing command prints nothing on stdout", file: file, line: line)
        for (dir, old) in zip(unchanged, before) {
            XCTAssertEqual(snapshot(dir, file: file, line: line), old, "\(dir) changed", file: file, line: line)
        }
        return r
    }

    func keyFiles(_ kms: String) throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: kms).filter { $0.hasSuffix(".key") }.sorted()
    }

    // MARK: exit 3, not a volume

    func testMountOfNonVolumeDirectoryExits3() throws {
        let notVolume = plain + "/not-a-volume"
        sh("mkdir -p \(notVolume)/data && echo hello > \(notVolume)/file && echo '{}' > \(notVolume)/other.json")
        assertFails(["mount", notVolume, mnt, "--kms-dir", fx.kms], exit: 3, mentioning: "not a cmkfs volume", unchanged: [notVolume, fx.kms, mnt])
        assertFails(["mount", plain + "/missing", mnt, "--kms-dir", fx.kms], exit: 3, mentioning: "does not exist", unchanged: [plain, fx.kms])
        sh("test ! -e \(plain)/missing")
        // A volume whose configuration is not valid JSON.
        sh("echo 'not json' > \(notVolume)/cmkfs.volume")
        assertFails(["mount", notVolume, mnt, "--kms-dir", fx.kms], exit: 3, unchanged: [notVolume, fx.kms])
        XCTAssertFalse(fx.isMounted(mnt))
    }

    // MARK: exit 4, unsupported format

    func testUnknownVolumeFormatExits4() throws {
        sh("sed -i 's/\"format\" : [12],/\"format\" : 99,/' \(vol)/cmkfs.volume && grep -q '\"format\" : 99' \(vol)/cmkfs.volume")
        assertFails(["mount", vol, mnt, "--kms-dir", fx.kms], exit: 4, mentioning: "format 99", unchanged: [vol, fx.kms, mnt])
        assertFails(["status", vol, "--kms-dir", fx.kms, "--json"], exit: 4, unchanged: [vol, fx.kms])
        XCTAssertFalse(fx.isMounted(mnt))
    }

    // MARK: exit 5, key unavailable

    func testMissingKMSDirectoryExits5() throws {
        assertFails(["mount", vol, mnt, "--kms-dir", plain + "/no-such-kms"], exit: 5, mentioning: "does not exist",
                    unchanged: [vol, fx.kms, plain, mnt])
        sh("test ! -e \(plain)/no-such-kms")
        // The keystore recorded in the volume is gone (no --kms-dir).
        sh("mv \(fx.kms) \(plain)/kms-moved")
        assertFails(["mount", vol, mnt], exit: 5, mentioning: "cmkfs: hint:", unchanged: [vol, plain, mnt])
        sh("test ! -e \(fx.kms)")
        // status still answers, and says why the key is unusable.
        let r = fx.cmkfs(["status", vol, "--json"])
        XCTAssertEqual(r.status, 5, "the report, and the key check's exit code: \(r)")
        let json = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        XCTAssertNotEqual(json["key_check"] as? String, "ok")
        XCTAssertEqual(json["key_check_reason"] as? String, "missing")
        XCTAssertTrue((json["key_check"] as? String ?? "").contains("does not exist"), "\(json)")
        XCTAssertFalse(fx.isMounted(mnt))
    }

    func testMissingKeyFileExits5() throws {
        let keys = try keyFiles(fx.kms)
        XCTAssertEqual(keys.count, 1, "one master key file: \(keys)")
        sh("mv \(fx.kms)/\(keys[0]) \(plain)/")
        assertFails(["mount", vol, mnt, "--kms-dir", fx.kms], exit: 5, mentioning: "has no master key", unchanged: [vol, fx.kms, mnt])
        XCTAssertFalse(fx.isMounted(mnt))
    }

    func testKeyFileReplacedByAnotherKeyExits5() throws {
        let otherVolume = fx.root + "/vol2", otherKMS = fx.root + "/kms2"
        try fx.initVolume(otherVolume, kmsDir: otherKMS)
        let mine = try keyFiles(fx.kms), theirs = try keyFiles(otherKMS)
        XCTAssertEqual(mine.count, 1)
        XCTAssertEqual(theirs.count, 1)
        XCTAssertNotEqual(mine, theirs)
        // The other keystore's key, under this volume's key id: same id, different key.
        sh("cp \(otherKMS)/\(theirs[0]) \(fx.kms)/\(mine[0])")
        assertFails(["mount", vol, mnt, "--kms-dir", fx.kms], exit: 5, mentioning: "different master key",
                    unchanged: [vol, fx.kms, otherVolume, otherKMS, mnt])
        XCTAssertFalse(fx.isMounted(mnt))
        let status = try fx.status()
        XCTAssertTrue((status["key_check"] as? String ?? "").contains("different master key"), "\(status)")
        XCTAssertEqual(status["key_check_reason"] as? String, "wrong-key")
        XCTAssertEqual(fx.cmkfs(["status", vol, "--kms-dir", fx.kms]).status, 5, "status exits non-zero when the key cannot be used")
    }

    // MARK: exit 6, mountpoint problems

    func testMountpointProblemsExit6() throws {
        assertFails(["mount", vol, plain + "/no-such-dir", "--kms-dir", fx.kms], exit: 6, mentioning: "does not exist",
                    unchanged: [vol, fx.kms, plain])
        sh("test ! -e \(plain)/no-such-dir")
        sh("echo file > \(plain)/a-file")
        assertFails(["mount", vol, plain + "/a-file", "--kms-dir", fx.kms], exit: 6, mentioning: "not a directory",
                    unchanged: [vol, fx.kms, plain])
        assertFails(["mount", vol, vol + "/data", "--kms-dir", fx.kms], exit: 6, mentioning: "inside the volume",
                    unchanged: [vol, fx.kms])
        XCTAssertEqual(MountFixture.mounts(under: fx.root), [])
    }

    func testBusyMountpointExits6() throws {
        try fx.mount()
        sh("echo in the first volume > \(mnt)/f")
        // Make the audit log durable now, so its group commit changes nothing while the volume is
        // snapshotted.
        try fx.syncAudit()
        let otherVolume = fx.root + "/vol2", otherKMS = fx.root + "/kms2"
        try fx.initVolume(otherVolume, kmsDir: otherKMS)
        assertFails(["mount", otherVolume, mnt, "--kms-dir", otherKMS], exit: 6, mentioning: "busy",
                    unchanged: [otherVolume, otherKMS, vol, fx.kms])
        XCTAssertEqual(sh("cat \(mnt)/f"), "in the first volume\n", "the first mount is untouched")
        XCTAssertEqual(MountFixture.mounts(under: fx.root), [mnt])
    }

    // MARK: exit 7, init target not empty

    func testInitIntoNonEmptyDirectoryExits7() throws {
        let target = plain + "/occupied"
        sh("mkdir -p \(target) && echo keep me > \(target)/precious && touch \(target)/.hidden")
        let newKMS = plain + "/new-kms"
        assertFails(["init", target, "--kms-dir", newKMS], exit: 7, mentioning: "not empty", unchanged: [target, fx.kms])
        sh("test ! -e \(newKMS)")
        // Nor over an existing volume.
        assertFails(["init", vol, "--kms-dir", fx.kms], exit: 7, unchanged: [vol, fx.kms])
        XCTAssertEqual(try keyFiles(fx.kms).count, 1, "no new master key was made")
    }

    // MARK: exit 8, already mounted

    func testMountingAnAlreadyMountedVolumeExits8() throws {
        try fx.mount()
        sh("echo something > \(mnt)/f")
        // Checkpoint the create into meta.db first (instead of waiting for the group commit), so
        // the snapshot below sees only what the refused mount might change.
        try fx.syncAudit()
        let second = fx.root + "/mnt2"
        sh("mkdir \(second)")
        let pid = fx.lockPID()
        assertFails(["mount", vol, second, "--kms-dir", fx.kms], exit: 8, mentioning: "already mounted",
                    unchanged: [vol, fx.kms, second])
        XCTAssertFalse(fx.isMounted(second))
        XCTAssertEqual(fx.lockPID(), pid)
        XCTAssertEqual(sh("cat \(mnt)/f"), "something\n")
    }

    // MARK: unmount, usage

    func testUnmountOfSomethingNotMountedExits6() throws {
        assertFails(["unmount", mnt], exit: 6, mentioning: "not mounted", unchanged: [vol, mnt])
        assertFails(["unmount", plain + "/nowhere"], exit: 6, unchanged: [plain])
        assertFails(["unmount", "/proc"], exit: 6, mentioning: "not a cmkfs mount", unchanged: [vol])
    }

    func testUsageErrorsExit64() throws {
        assertFails(["mount", vol], exit: 64, unchanged: [vol, fx.kms])
        assertFails(["init", plain + "/bs", "--kms-dir", fx.kms, "--block-size", "1000"], exit: 64, unchanged: [plain, fx.kms])
        assertFails(["no-such-command"], exit: 64, unchanged: [vol])
        for (typo, hint) in [(["mout", vol, mnt], "did you mean 'cmkfs mount'?"), (["key", "revok", vol], "did you mean 'cmkfs key revoke'?"),
                             (["audit", "veryfy", vol], "did you mean 'cmkfs audit verify'?")] {
            let r = assertFails(typo, exit: 64, mentioning: "cmkfs: hint: " + hint, unchanged: [vol])
            XCTAssertTrue(r.stderr.hasPrefix("cmkfs: error: unknown command"), r.stderr)
        }
        assertFails(["mount", vol, mnt, "--kms-dir", fx.kms, "--lease-renew", "2h", "--cache-max-lifetime", "1h"], exit: 64,
                    mentioning: "must be shorter than --cache-max-lifetime", unchanged: [vol])
        assertFails(["mount", vol, mnt, "--kms-dir", fx.kms, "-o", "lease_renew=2h"], exit: 64,
                    mentioning: "must be shorter than --cache-max-lifetime", unchanged: [vol])
        assertFails(["mount", vol, mnt, "--kms-dir", fx.kms, "--metrics-textfile", plain + "/no-such-dir/cmkfs.prom"], exit: 64,
                    mentioning: "no-such-dir does not exist", unchanged: [vol])
        assertFails(["mount", vol, mnt, "--kms-dir", fx.kms, "-o", "metrics_textfile=\(plain)/m.prom,metrics_interval=0"], exit: 64,
                    mentioning: "--metrics-interval must be between 1 and 86400 seconds", unchanged: [vol])
    }

    /// After the daemon is killed, status names the stale mount and how to clear it.
    func testStatusNamesAStaleMountWhoseDaemonIsGone() throws {
        try fx.mount()
        let pid = try XCTUnwrap(fx.lockPID())
        kill(pid, SIGKILL)
        let deadline = Date().addingTimeInterval(10)
        while MountFixture.isCmkfsDaemon(pid, volume: vol) && Date() < deadline { usleep(20_000) }
        let r = fx.cmkfs(["status", vol, "--kms-dir", fx.kms])
        XCTAssertTrue(r.stdout.contains("mounted:       no — stale mount at \(mnt)") && r.stdout.contains("cmkfs unmount \(mnt)"), "\(r)")
        XCTAssertTrue(fx.cmkfs(["unmount", mnt]).succeeded)
        XCTAssertTrue(fx.cmkfs(["status", vol, "--kms-dir", fx.kms]).stdout.contains("mounted:       no\n"))
    }

    /// A user who may not read the volume is told so, not that there is no volume.
    func testAnotherUserIsToldPermissionDeniedNotNoVolume() throws {
        sh("chmod 700 \(vol)")
        for command in [["status", vol], ["audit", "verify", vol], ["key", "list", vol]] {
            let r = fx.sh("runuser -u nobody -- \(Shell.quote(MountFixture.binary)) \(command.map(Shell.quote).joined(separator: " "))")
            XCTAssertEqual(r.status, 17, "\(command): \(r)")
            XCTAssertTrue(r.stderr.contains("cmkfs: error: permission denied: \(vol)") && r.stderr.contains("run as root or as the volume's owner"),
                          "\(command): \(r.stderr)")
        }
        sh("chmod 755 \(vol) && chmod 700 \(vol)/audit")
        let audit = fx.sh("runuser -u nobody -- \(Shell.quote(MountFixture.binary)) audit show \(vol)")
        XCTAssertEqual(audit.status, 17, "\(audit)")
        XCTAssertTrue(audit.stderr.contains("permission denied: \(vol)/audit"), audit.stderr)
    }

    /// A flag of a provider not chosen is an error, not ignored: `--kms-socket` without
    /// `--kms socket` used to make an embedded volume, the opposite of what was meant.
    func testInitRefusesAnotherProvidersFlags() throws {
        let target = plain + "/pv"
        let socket = assertFails(["init", target, "--kms-socket", fx.root + "/kms.sock"], exit: 64,
                                 mentioning: "--kms-socket is a flag of the socket provider", unchanged: [plain, fx.kms])
        XCTAssertTrue(socket.stderr.contains("cmkfs: hint: add --kms socket"), socket.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: target))
        for (extra, flag) in [(["--token", "t"], "--token"), (["--key-id", "mk-1"], "--key-id"), (["--pin-file", "/x"], "--pin-file"),
                              (["--kms", "socket", "--kms-socket", "/s", "--kms-dir", fx.kms], "--kms-dir")] {
            assertFails(["init", target] + extra, exit: 64, mentioning: "\(flag) is a flag of the", unchanged: [plain, fx.kms])
        }
    }

    /// `cmkfs unmount` returns only once the daemon is done with the volume: what a script
    /// copies right after it returns is what stays (no late WAL checkpoint, no late log line),
    /// and the daemon is gone shortly after.
    func testUnmountReturnsWithTheVolumeAtRest() throws {
        for round in 0..<3 {
            try fx.mount()
            let pid = try XCTUnwrap(fx.lockPID())
            sh("for i in $(seq 1 50); do echo $i > \(mnt)/f\(round)-$i; done")
            py("import os, sys\nfor i in range(1, 51): os.setxattr('%s/f%d-%d' % (sys.argv[1], int(sys.argv[2]), i), 'user.n', b'x' * i)",
               [mnt, String(round)])
            try fx.unmount()
            let atReturn = snapshot(vol)
            waitUntil(deadline: 10) { !MountFixture.isAlive(pid) }
            XCTAssertFalse(MountFixture.isAlive(pid), "the daemon \(pid) exits after unmount")
            XCTAssertEqual(snapshot(vol), atReturn, "round \(round): the volume changed after unmount returned")
        }
        XCTAssertEqual(try fx.fileCount(), 150)
    }

    // MARK: status

    func testStatusJSONFields() throws {
        let config = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: vol + "/cmkfs.volume"))) as? [String: Any])
        var s = try fx.status()
        XCTAssertEqual(s["volume_id"] as? String, config["volume_id"] as? String)
        XCTAssertEqual((s["volume_id"] as? String)?.count, 32)
        XCTAssertEqual(s["volume"] as? String, vol)
        XCTAssertEqual(s["file_count"] as? Int, 0)
        XCTAssertEqual(s["mounted"] as? Bool, false)
        XCTAssertNil(s["mount_pid"] as? Int)
        XCTAssertNil(s["mountpoint"] as? String)
        XCTAssertEqual(s["key_check"] as? String, "ok")
        XCTAssertEqual(s["active_key_version"] as? Int, 1)
        XCTAssertEqual(s["block_size"] as? Int, 4096)
        XCTAssertEqual(s["format"] as? Int, 2, "encrypted names are volume format 2")
        let provider = try XCTUnwrap(s["provider"] as? [String: Any])
        XCTAssertEqual(provider["kms_dir"] as? String, fx.kms)
        XCTAssertEqual(try keyFiles(fx.kms), ["\(provider["key_id"] as? String ?? "?").key"])

        try fx.mount()
        sh("for i in 1 2 3; do echo $i > \(mnt)/f$i; done; mkdir \(mnt)/d; ln -s f1 \(mnt)/s")
        s = try fx.status()
        XCTAssertEqual(s["mounted"] as? Bool, true)
        XCTAssertEqual(s["mountpoint"] as? String, mnt)
        let pid = try XCTUnwrap(s["mount_pid"] as? Int)
        XCTAssertEqual(pid_t(pid), fx.lockPID())
        XCTAssertTrue(MountFixture.isCmkfsDaemon(pid_t(pid), volume: vol), "mount_pid \(pid) is the live daemon")
        XCTAssertEqual(s["file_count"] as? Int, 3)
        let versions = try XCTUnwrap(s["key_versions"] as? [[String: Any]])
        XCTAssertEqual(versions.count, 1)
        XCTAssertEqual(versions.first?["edeks"] as? Int, 3)
        XCTAssertEqual(versions.first?["state"] as? String, "active")
        // The human-readable form agrees.
        let text = fx.cmkfs(["status", vol, "--kms-dir", fx.kms])
        XCTAssertTrue(text.succeeded && text.stdout.contains("files:         3") && text.stdout.contains("pid \(pid)"), "\(text)")

        try fx.unmount()
        s = try fx.status()
        XCTAssertEqual(s["mounted"] as? Bool, false)
        XCTAssertNil(s["mount_pid"] as? Int)
        XCTAssertEqual(s["file_count"] as? Int, 3)
    }
}
