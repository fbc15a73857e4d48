import Foundation
import XCTest

/// `cmkfs fsck`, damage contained to the damaged file, and a full backing disk.
final class FsckTests: IntegrationTestCase {
    /// The backing file of a file at the top of the mount.
    /// The backing path of `name` (names are encrypted; the last component need not exist).
    func backing(_ name: String) -> String {
        do { return try fx.backing(name) } catch { XCTFail("\(error)"); return "/nonexistent" }
    }

    func fileID(_ name: String) -> String {
        let r = py("import sys; print(open(sys.argv[1], 'rb').read(24)[8:24].hex())", [backing(name)])
        return r.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    struct Report {
        var status: Int32
        var problems: [[String: Any]]
        var raw: String
        func of(_ kind: String) -> [[String: Any]] { problems.filter { $0["kind"] as? String == kind } }
    }

    func fsck(_ extra: [String] = []) -> Report {
        let r = fx.cmkfs(["fsck", vol, "--kms-dir", fx.kms, "--json"] + extra, timeout: 300)
        let o = (try? JSONSerialization.jsonObject(with: Data(r.stdout.utf8))) as? [String: Any]
        return Report(status: r.status, problems: (o?["problems"] as? [[String: Any]]) ?? [], raw: "\(r)")
    }

    func testCleanVolumeIsCleanAndAMountedVolumeIsRefused() throws {
        sh("mkdir -p \(mnt)/d/e && head -c 100000 /dev/urandom > \(mnt)/d/e/f && echo x > \(mnt)/g && ln \(mnt)/g \(mnt)/d/h && truncate -s 1M \(mnt)/sparse")
        let mounted = fx.cmkfs(["fsck", vol, "--kms-dir", fx.kms])
        XCTAssertEqual(mounted.status, 8, "\(mounted)")
        try fx.unmount()
        let r = fsck()
        XCTAssertEqual(r.status, 0, r.raw)
        XCTAssertTrue(r.problems.isEmpty, r.raw)
        XCTAssertTrue(r.raw.contains("\"files_checked\" : 3"), r.raw)
        let text = fx.cmkfs(["fsck", vol, "--kms-dir", fx.kms])
        XCTAssertTrue(text.succeeded && text.stdout.contains("0 problems"), "\(text)")
    }

    /// With plaintext names a dotfile is the user's file like any other. The backing-tree walk of
    /// fsck, rekey and purge skipped every name starting with a dot (on an encrypted-name volume
    /// only cmkfs's own entries do): rekey left dotfiles under their old key, and fsck called
    /// their key rows orphans, which `--repair` deletes (the files then read as EIO).
    func testDotfilesOfAPlaintextNamesVolumeAreRekeyedCheckedAndKept() throws {
        let pvol = fx.root + "/vol-plain", pmnt = fx.root + "/mnt-plain"
        try FileManager.default.createDirectory(atPath: pmnt, withIntermediateDirectories: false)
        try fx.initVolume(pvol, plaintextNames: true)
        try fx.mount(pvol, at: pmnt)
        sh("echo secret > \(pmnt)/.hidden && mkdir \(pmnt)/d && echo two > \(pmnt)/d/.x && echo vis > \(pmnt)/visible")
        let rekey = fx.cmkfs(["rekey", pvol, "--kms-dir", fx.kms, "--json"], timeout: 300)
        XCTAssertTrue(rekey.succeeded, "\(rekey)")
        let summary = (try? JSONSerialization.jsonObject(with: Data(rekey.stdout.utf8))) as? [String: Any]
        XCTAssertEqual(summary?["rekeyed"] as? Int, 3, "every file is rekeyed, dotfiles too: \(rekey.stdout)")
        try fx.unmount(pmnt)
        let check = fx.cmkfs(["fsck", pvol, "--kms-dir", fx.kms, "--json"], timeout: 300)
        XCTAssertEqual(check.status, 0, "\(check)")
        XCTAssertTrue(check.stdout.contains("\"files_checked\" : 3"), "\(check)")
        let repair = fx.cmkfs(["fsck", pvol, "--kms-dir", fx.kms, "--repair"], timeout: 300)
        XCTAssertEqual(repair.status, 0, "\(repair)")
        try fx.mount(pvol, at: pmnt)
        XCTAssertEqual(sh("cat \(pmnt)/.hidden \(pmnt)/d/.x \(pmnt)/visible"), "secret\ntwo\nvis\n")
        try fx.unmount(pmnt)
    }

    /// Each kind of damage is named by path and file id, reads of the damaged file fail with EIO
    /// (logged and audited) while every other file reads, and --repair fixes what is safe.
    func testDamageIsContainedNamedAndRepairedWhereSafe() throws {
        for name in ["a", "b", "c", "d", "e", "f", "g", "ok"] { makeRandomFile(plain + "/" + name, size: 3 * 4096 + 100) }
        sh("cp \(plain)/* \(mnt)/")
        try fx.unmount()
        let ids = Dictionary(uniqueKeysWithValues: ["a", "b", "c", "d", "e", "f", "g"].map { ($0, fileID($0)) })
        // g: its encrypted name replaced by garbage, so the mount cannot show it.
        sh("mv \(backing("g")) \(vol)/data/not-an-encrypted-name")
        // a: one flipped bit in block 1.  b: header cut off.  c: key row deleted.
        // d: copied behind the mount's back.  e: backing file deleted (rows left).  f: torn tail.
        py("""
            import sys
            p = sys.argv[1]
            with open(p, 'r+b') as f:
                f.seek(24 + 4124 + 500); b = f.read(1); f.seek(24 + 4124 + 500); f.write(bytes([b[0] ^ 4]))
            """, [backing("a")])
        sh("truncate -s 10 \(backing("b"))")
        sh("sqlite3 \(vol)/meta.db \"DELETE FROM file_attrs WHERE file_id = x'\(ids["c"]!)'\"")
        sh("cp \(backing("d")) \(backing("d-copy"))")
        sh("rm \(backing("e"))")
        // A write torn inside the last block's nonce and tag: not a valid encrypted size.
        sh("truncate -s \(24 + 3 * 4124 + 10) \(backing("f"))")

        // Mounted, the damage stays with its file.
        try fx.mount()
        XCTAssertEqual(sha256(mnt + "/ok"), sha256(plain + "/ok"))
        XCTAssertTrue(fx.sh("dd if=\(mnt)/a bs=4096 skip=1 count=1 status=none > /dev/null").stderr.contains("Input/output error"))
        XCTAssertEqual(sh("dd if=\(mnt)/a bs=4096 count=1 status=none | sha256sum"), sh("dd if=\(plain)/a bs=4096 count=1 status=none | sha256sum"))
        XCTAssertTrue(fx.sh("cat \(mnt)/b > /dev/null").stderr.contains("Input/output error"))
        XCTAssertTrue(fx.sh("cat \(mnt)/c > /dev/null").stderr.contains("Input/output error"))
        try fx.unmount()
        let log = fx.mountLog()
        XCTAssertTrue(log.contains("block 1 is corrupt"), log)
        let denied = fx.cmkfs(["audit", "show", vol, "--json"]).stdout.split(separator: "\n").filter { $0.contains("\"error\",\"errno\":5") }
        XCTAssertTrue(denied.contains { $0.contains("\"/a\"") && $0.contains("block 1") }, denied.joined(separator: "\n"))
        XCTAssertTrue(denied.contains { $0.contains("\"/b\"") }, denied.joined(separator: "\n"))
        XCTAssertTrue(denied.contains { $0.contains("\"/c\"") }, denied.joined(separator: "\n"))
        // A rekey copy cut short (the mount removes these itself; fsck finds them offline).
        sh("mkdir -p \(vol)/rekey && head -c 100 /dev/urandom > \(vol)/rekey/00112233445566778899aabbccddeeff.tmp")

        let check = fsck()
        XCTAssertEqual(check.status, 15, check.raw)
        func has(_ kind: String, _ path: String?, _ id: String?, file: StaticString = #filePath, line: UInt = #line) {
            XCTAssertTrue(check.of(kind).contains { ($0["path"] as? String) == path && ($0["file_id"] as? String) == id },
                          "\(kind) \(path ?? "-") \(id ?? "-") in \(check.raw)", file: file, line: line)
        }
        has("bad-block", "/a", ids["a"])
        XCTAssertEqual(check.of("bad-block").first?["block"] as? Int, 1)
        has("bad-header", "/b", nil)
        has("no-key-row", "/c", ids["c"])
        XCTAssertEqual(check.of("duplicate-file-id").count, 1, check.raw)
        has("orphan-rows", nil, ids["e"])
        has("bad-size", "/f", ids["f"])
        XCTAssertEqual(check.of("orphan-copy").count, 1, check.raw)
        has("bad-name", "data/not-an-encrypted-name", ids["g"])
        // b's rows look orphaned too: its destroyed header no longer names them.
        XCTAssertEqual(check.of("orphan-rows").count, 2, check.raw)
        XCTAssertEqual(check.problems.count, 9, "\(check.problems.map { "\($0["kind"] ?? "") \($0["path"] ?? "")" })")
        XCTAssertTrue(check.problems.allSatisfy { $0["repaired"] as? Bool == false })
        XCTAssertTrue(FileManager.default.fileExists(atPath: backing("b")), "a check alone changes nothing")

        let fixed = fsck(["--repair"])
        XCTAssertEqual(fixed.status, 15, "unrepairable problems remain: \(fixed.raw)")
        let repaired = Set(fixed.problems.filter { $0["repaired"] as? Bool == true }.compactMap { $0["kind"] as? String })
        XCTAssertEqual(repaired, ["bad-header", "no-key-row", "orphan-rows", "orphan-copy", "bad-name"], fixed.raw)
        // Nothing readable was deleted: the undecryptable files are kept in lost+found.
        let lost = try FileManager.default.contentsOfDirectory(atPath: vol + "/lost+found")
        XCTAssertEqual(lost.count, 4, "two files and the rows of two: \(lost)")
        XCTAssertTrue(lost.contains("\(ids["e"]!).rows.json"), "\(lost)")
        XCTAssertTrue(lost.contains { $0.hasPrefix(ids["c"]!) }, "\(lost)")
        XCTAssertFalse(FileManager.default.fileExists(atPath: backing("b")))
        XCTAssertTrue(FileManager.default.fileExists(atPath: backing("a")), "a partly readable file stays")
        let again = fsck()
        XCTAssertEqual(Set(again.problems.compactMap { $0["kind"] as? String }), ["bad-block", "duplicate-file-id", "bad-size"], again.raw)
        XCTAssertTrue(fx.cmkfs(["audit", "verify", vol]).succeeded)
        XCTAssertEqual(fx.cmkfs(["audit", "show", vol, "--event", "fsck"]).stdout.split(separator: "\n").count, 6 + 3,
                       "a record per repair, plus one per fsck run")
        try fx.mount()
        XCTAssertEqual(sha256(mnt + "/ok"), sha256(plain + "/ok"))
        XCTAssertEqual(sha256(mnt + "/d"), sha256(plain + "/d"))
        // The file whose name was destroyed is back, under a name fsck gave it.
        XCTAssertEqual(sha256(mnt + "/recovered-\(ids["g"]!)"), sha256(plain + "/g"))
    }

    /// The encrypted-name structures: a long name's row without its entry, a mkdir cut short, a
    /// directory without its id.
    func testEncryptedNameStructuresAreChecked() throws {
        let long = String(repeating: "n", count: 200)
        sh("mkdir \(mnt)/d && echo x > \(mnt)/d/\(long) && echo y > \(mnt)/d/short")
        try fx.unmount()
        XCTAssertEqual(fsck().problems.count, 0)
        sh("rm \(backing("d/" + long))")
        let d = backing("d")
        sh("mkdir \(d)/.cmkfs-mkdir-0011223344556677 && head -c 16 /dev/urandom > \(d)/.cmkfs-mkdir-0011223344556677/.cmkfs-dirid")
        sh("mkdir \(vol)/data/made-behind-the-mounts-back")
        let check = fsck()
        XCTAssertEqual(check.of("orphan-long-name").count, 1, check.raw)
        XCTAssertEqual(check.of("orphan-mkdir").count, 1, check.raw)
        XCTAssertEqual(check.of("missing-dir-id").first?["path"] as? String, "data/made-behind-the-mounts-back", check.raw)
        let fixed = fsck(["--repair"])
        XCTAssertEqual(Set(fixed.problems.filter { $0["repaired"] as? Bool == true }.compactMap { $0["kind"] as? String }),
                       ["orphan-long-name", "orphan-mkdir", "orphan-rows"], fixed.raw)
        XCTAssertEqual(fsck().problems.compactMap { $0["kind"] as? String }, ["missing-dir-id"])
        try fx.mount()
        XCTAssertEqual(sh("cat \(mnt)/d/short"), "y\n")
    }

    func testTamperedAuditSegmentIsAProblem() throws {
        sh("echo x > \(mnt)/f && cat \(mnt)/f > /dev/null")
        try fx.unmount()
        sh("chattr -R -a \(vol)/audit; f=$(ls \(vol)/audit/audit-*.log | head -1); sed -i '2s/\"ok\"/\"OK\"/' $f")
        let r = fsck()
        XCTAssertEqual(r.status, 15, r.raw)
        XCTAssertTrue((r.of("audit").first?["detail"] as? String ?? "").contains("edited"), r.raw)
    }

    /// kill -9 of the mount between a new file's key row and its header: the name never appears
    /// without a complete file behind it (before creates were linked in only when complete, the
    /// crash left a name whose open failed with EIO).
    func testCrashDuringCreateLeavesNoBrokenName() throws {
        sh("echo before > \(mnt)/before && sync \(mnt)/before")
        try fx.unmount()
        let r = Shell.run("/usr/bin/env", ["CMKFS_CRASH_POINT=create-before-header", MountFixture.binary, "mount", vol, mnt,
                                           "--kms-dir", fx.kms], timeout: 60, logDir: fx.logs)
        XCTAssertTrue(r.succeeded, "\(r)")
        let pid = try XCTUnwrap(fx.lockPID())
        let create = fx.sh("echo new > \(mnt)/victim", timeout: 30)
        XCTAssertFalse(create.succeeded, "the daemon was to die mid-create: \(create)")
        waitUntil(deadline: 10) { !MountFixture.isAlive(pid) }
        XCTAssertFalse(MountFixture.isAlive(pid))
        sh("fusermount3 -u -z \(mnt)")
        XCTAssertFalse(FileManager.default.fileExists(atPath: backing("victim")), "a name without a complete file")
        let check = fsck()
        XCTAssertEqual(check.problems.map { $0["kind"] as? String }, ["orphan-rows"], check.raw)
        XCTAssertEqual(fsck(["--repair"]).status, 0)
        try fx.mount()
        XCTAssertEqual(sh("cat \(mnt)/before"), "before\n")
        sh("echo again > \(mnt)/victim && cat \(mnt)/victim | grep -q again")
    }

    /// A full backing filesystem: new data fails with ENOSPC, existing files stay readable (the
    /// audit log writes into its reserved space), and nothing is damaged.
    func testFullDiskFailsWritesWithENOSPCAndKeepsFilesReadable() throws {
        try fx.unmount()
        let small = fx.root + "/small", svol = small + "/vol"
        sh("mkdir -p \(small) && mount -t tmpfs -o size=24m,mode=0700 cmkfs-full-test \(small)")
        defer {
            _ = fx.cmkfs(["unmount", mnt])
            fx.sh("chattr -R -a \(small) 2>/dev/null; umount -l \(small)")
        }
        try fx.initVolume(svol)
        try fx.mount(svol)
        for i in 0..<5 { makeRandomFile(plain + "/k\(i)", size: 300_000 + i) }
        sh("cp \(plain)/k* \(mnt)/ && mkdir \(mnt)/dir && echo 'in dir' > \(mnt)/dir/x")
        let fill = fx.sh("dd if=/dev/urandom of=\(mnt)/fill bs=1M count=64 conv=fsync status=none")
        XCTAssertTrue(fill.stderr.contains("No space left on device"), "\(fill)")
        // Fill what a 1 MiB write could not use, to the last page.
        fx.sh("dd if=/dev/urandom of=\(mnt)/fill2 bs=4096 count=10000 conv=fsync status=none")
        // Existing files read, many times over (each open is an audit record).
        for _ in 0..<20 { for i in 0..<5 { XCTAssertEqual(sha256(mnt + "/k\(i)"), sha256(plain + "/k\(i)")) } }
        XCTAssertEqual(sh("cat \(mnt)/dir/x"), "in dir\n")
        // New data fails cleanly.
        XCTAssertTrue(fx.sh("echo new > \(mnt)/new").stderr.contains("No space left on device"))
        XCTAssertTrue(fx.sh("head -c 100000 /dev/urandom >> \(mnt)/k0").stderr.contains("No space left on device"))
        let rename = fx.sh("mv \(mnt)/k1 \(mnt)/k1-renamed")
        let k1 = rename.succeeded ? "/k1-renamed" : "/k1"
        let rotate = fx.cmkfs(["key", "rotate", svol, "--kms-dir", fx.kms, "--json"])
        print("[cmkfs-it] full disk: rename \(rename.succeeded ? "ok" : "failed: \(rename.stderr)"), rotate exit \(rotate.status)")
        XCTAssertTrue(rotate.succeeded || rotate.stderr.contains("full") || rotate.stderr.contains("space"), "\(rotate)")
        XCTAssertEqual(sha256(mnt + k1), sha256(plain + "/k1"))
        // k0 may have grown by what fitted before ENOSPC: its first bytes are intact.
        XCTAssertEqual(sh("head -c 300000 \(mnt)/k0 | sha256sum"), sh("sha256sum < \(plain)/k0"))
        // Free space; everything is consistent and usable again.
        sh("rm \(mnt)/fill \(mnt)/fill2")
        sh("echo new > \(mnt)/new && cat \(mnt)/new | grep -q new")
        try fx.unmount()
        let check = fx.cmkfs(["fsck", svol, "--kms-dir", fx.kms, "--json"])
        XCTAssertEqual(check.status, 0, "\(check)")
        try fx.mount(svol)
        for i in [2, 3, 4] { XCTAssertEqual(sha256(mnt + "/k\(i)"), sha256(plain + "/k\(i)")) }
        try fx.unmount()
        XCTAssertTrue(fx.cmkfs(["audit", "verify", svol]).succeeded)
    }
}
