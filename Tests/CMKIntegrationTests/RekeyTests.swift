import Foundation
import XCTest

/// `cmkfs rekey`: fresh DEKs and re-encrypted blocks with the plaintext unchanged, on a live
/// mount (under an application that keeps the file open) and offline; kill -9 of the command
/// and of the mount mid-way leave every file whole.
final class RekeyTests: IntegrationTestCase {
    /// file id (hex) → EDEK (hex), from the database.
    func edeks() -> [String: String] {
        var out: [String: String] = [:]
        let text = sh("sqlite3 \(vol)/meta.db \"SELECT hex(file_id), hex(value) FROM file_attrs WHERE name = 'cmkfs.edek'\"")
        for line in text.split(separator: "\n") {
            let f = line.split(separator: "|")
            if f.count == 2 { out[String(f[0])] = String(f[1]) }
        }
        return out
    }

    func backingHash(_ name: String) -> String { sha256((try? fx.backing(name)) ?? vol + "/data/?") }

    func rekey(_ args: [String] = [], file: StaticString = #filePath, line: UInt = #line) -> [String: Any] {
        let r = fx.cmkfs(["rekey", vol, "--kms-dir", fx.kms, "--json"] + args, timeout: 300)
        XCTAssertTrue(r.succeeded, "rekey: \(r)", file: file, line: line)
        return ((try? JSONSerialization.jsonObject(with: Data(r.stdout.utf8))) as? [String: Any]) ?? [:]
    }

    func testRekeyGivesEveryFileANewKeyAndKeepsItsContent() throws {
        makeRandomFile(plain + "/big", size: 5 * 1024 * 1024 + 123)
        sh("cp \(plain)/big \(mnt)/big && mkdir \(mnt)/d && echo small > \(mnt)/d/small && : > \(mnt)/empty")
        sh("truncate -s 10M \(mnt)/sparse && printf 'tail' | dd of=\(mnt)/sparse bs=1 seek=9000000 conv=notrunc status=none")
        sh("ln \(mnt)/d/small \(mnt)/hardlink")
        py("import os, sys; os.setxattr(sys.argv[1], 'user.tag', b'secret-tag')", [mnt + "/d/small"])
        let before = edeks(), bigBefore = backingHash("big"), sums = sh("cd \(mnt) && sha256sum big d/small empty sparse")
        let summary = rekey()
        XCTAssertEqual(summary["rekeyed"] as? Int, 4, "the hard link is one file: \(summary)")
        let after = edeks()
        XCTAssertEqual(Set(after.keys), Set(before.keys), "file ids are kept")
        for (id, edek) in before { XCTAssertNotEqual(after[id], edek, "file \(id) kept its EDEK") }
        XCTAssertNotEqual(backingHash("big"), bigBefore, "the blocks were re-encrypted")
        XCTAssertEqual(sh("cd \(mnt) && sha256sum big d/small empty sparse"), sums)
        XCTAssertEqual(py("import os, sys; print(os.getxattr(sys.argv[1], 'user.tag').decode())", [mnt + "/hardlink"]), "secret-tag\n")
        // Holes stay holes: the sparse file still takes far less than its size on disk.
        let blocks = Int(sh("stat -c %b \(try fx.backing("sparse"))").trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
        XCTAssertLessThan(blocks * 512, 1024 * 1024, "sparse backing file was filled in")
        XCTAssertTrue(FileManager.default.fileExists(atPath: vol + "/rekey"))
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: vol + "/rekey"), [], "no copy left behind")
        try fx.remount()
        XCTAssertEqual(sh("cd \(mnt) && sha256sum big d/small empty sparse"), sums)
        // One path, offline this time.
        try fx.unmount()
        let one = edeks()
        let r = fx.cmkfs(["rekey", vol, "d/small", "--kms-dir", fx.kms, "--json"])
        XCTAssertTrue(r.succeeded, "\(r)")
        XCTAssertEqual(edeks().filter { one[$0.key] != $0.value }.count, 1, "exactly one file rekeyed")
        try fx.mount()
        XCTAssertEqual(sh("cd \(mnt) && sha256sum big d/small empty sparse"), sums)
        XCTAssertTrue(fx.cmkfs(["audit", "verify", vol]).succeeded)
        let records = fx.cmkfs(["audit", "show", vol, "--event", "rekey", "--json"]).stdout
        XCTAssertEqual(records.split(separator: "\n").count, 5, records)
    }

    func testRekeyOfAFileAnApplicationKeepsOpenAndWrites() throws {
        sh("head -c 3000000 /dev/urandom > \(mnt)/live")
        // The application writes a pattern and reads it back, over and over, through one open
        // descriptor, while the file is rekeyed several times under it.
        let out = fx.root + "/app.out", stop = fx.root + "/stop"
        let app = Process()
        app.executableURL = URL(fileURLWithPath: Shell.python)
        app.arguments = ["-c", """
            import os, sys
            path, stop, out = sys.argv[1:4]
            fd = os.open(path, os.O_RDWR)
            n = errors = 0
            first = ""
            while not os.path.exists(stop):
                off = (n * 7919 * 512) % 2900000
                data = bytes([n % 251]) * 4096
                try:
                    os.pwrite(fd, data, off)
                    if os.pread(fd, 4096, off) != data: errors += 1; first = first or f"mismatch at {off}"
                except OSError as e:
                    errors += 1; first = first or str(e)
                n += 1
                if n == 20: open(out + ".ready", "w").close()
            os.fsync(fd); os.close(fd)
            open(out, "w").write(f"{n} {errors} {first}")
            """, mnt + "/live", stop, out]
        try app.run()
        defer { if app.isRunning { kill(app.processIdentifier, SIGKILL) }; app.waitUntilExit() }
        XCTAssertTrue(waitUntil(deadline: 60) { FileManager.default.fileExists(atPath: out + ".ready") || !app.isRunning },
                      "the application never got going")
        for _ in 0..<3 { _ = rekey(["live"]) }
        _ = FileManager.default.createFile(atPath: stop, contents: nil)
        app.waitUntilExit()
        let result = ((try? String(contentsOfFile: out, encoding: .utf8)) ?? "?").split(separator: " ", maxSplits: 2)
        XCTAssertEqual(result.count >= 2 ? result[1] : "?", "0", "application I/O failed during rekey: \(result)")
        print("[cmkfs-it] app ops during 3 rekeys of an open file: \(result.first ?? "?")")
        let sum = sha256(mnt + "/live")
        try fx.remount()
        XCTAssertEqual(sha256(mnt + "/live"), sum)
    }

    /// Big files so that a kill lands while one is being copied or switched.
    func makeBigFiles(_ count: Int) -> String {
        for i in 0..<count { makeRandomFile(plain + "/f\(i)", size: 24 * 1024 * 1024 + i) }
        sh("cp \(plain)/f* \(mnt)/")
        return sh("cd \(plain) && sha256sum f*")
    }

    /// Starts `cmkfs rekey` of the whole volume and returns once a re-encrypted copy has bytes
    /// in it (a file is mid-rekey), or the command has ended: the moment the crash tests kill
    /// something.
    func startRekeyUntilACopyExists() throws -> Process {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: MountFixture.binary)
        p.arguments = ["rekey", vol, "--kms-dir", fx.kms, "--json"]
        p.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
        p.standardError = FileHandle(forWritingAtPath: "/dev/null")
        try p.run()
        let copies = vol + "/rekey"
        let copying = {
            ((try? FileManager.default.contentsOfDirectory(atPath: copies)) ?? []).contains { name in
                ((try? FileManager.default.attributesOfItem(atPath: copies + "/" + name))?[.size] as? NSNumber)?.intValue ?? 0 > 0
            }
        }
        XCTAssertTrue(waitUntil(deadline: 60, interval: 0.002) { copying() || !p.isRunning }, "the rekey never started a copy")
        return p
    }

    func testKilledRekeyCommandLeavesEveryFileWholeAndResumes() throws {
        let sums = makeBigFiles(4)
        try fx.unmount()
        let before = edeks()
        let p = try startRekeyUntilACopyExists()
        defer { if p.isRunning { kill(p.processIdentifier, SIGKILL) }; p.waitUntilExit() }
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        let changed = edeks().filter { before[$0.key] != $0.value }.count
        print("[cmkfs-it] rekey killed after \(changed) of 4 files; copies left: \((try? FileManager.default.contentsOfDirectory(atPath: vol + "/rekey")) ?? [])")
        // The mount finishes an interrupted switch before serving: every file reads back whole.
        try fx.mount()
        XCTAssertEqual(sh("cd \(mnt) && sha256sum f*"), sums)
        try fx.unmount()
        // Running the command again resumes the run and rekeys what it had not reached.
        let summary = rekey()
        // A run record exists once a file is done: then the second run says it resumed.
        if changed > 0 && changed < 4 { XCTAssertEqual(summary["resumed"] as? Bool, true) }
        let after = edeks()
        for (id, edek) in before { XCTAssertNotEqual(after[id], edek, "file \(id) was never rekeyed") }
        try fx.mount()
        XCTAssertEqual(sh("cd \(mnt) && sha256sum f*"), sums)
        XCTAssertTrue(fx.cmkfs(["audit", "verify", vol]).succeeded)
    }

    /// Two user xattrs whose names differ only in Unicode normalization ("café" precomposed and
    /// decomposed) are two xattrs, kept apart by a live rekey and by a rekey finished from its
    /// journal after a crash.
    func testRekeyKeepsXattrsWhoseNamesDifferOnlyInNormalization() throws {
        let names = ["user.caf\u{e9}", "user.cafe\u{301}"]
        let show = """
            import os, sys
            print(sorted((a.encode().hex(), os.getxattr(sys.argv[1], a).decode()) for a in os.listxattr(sys.argv[1])))
            """
        sh("echo body > \(mnt)/f")
        py("import os, sys\nfor a in sys.argv[2:]: os.setxattr(sys.argv[1], a, a.encode())", [mnt + "/f"] + names)
        let expected = py(show, [mnt + "/f"])
        XCTAssertEqual(expected.components(separatedBy: "user.").count, 3, "two xattrs: \(expected)")
        _ = rekey(["f"])
        XCTAssertEqual(python(show, [mnt + "/f"]).stdout, expected, "after a live rekey")
        try fx.unmount()
        let crashed = fx.sh("CMKFS_CRASH_POINT=rekey-mid-copy \(Shell.quote(MountFixture.binary)) rekey \(vol) f --kms-dir \(fx.kms)")
        XCTAssertEqual(crashed.status, 86, "\(crashed)")
        try fx.mount()
        XCTAssertTrue(fx.mountLog().contains("finished the interrupted rekey of f"), fx.mountLog())
        XCTAssertEqual(python(show, [mnt + "/f"]).stdout, expected, "after a rekey finished from its journal")
        XCTAssertEqual(sh("cat \(mnt)/f"), "body\n")

        // A journal that an earlier version wrote (xattrs as a name -> hex object) is finished too.
        py("import os, sys; os.setxattr(sys.argv[1], 'user.one', b'one')", [mnt + "/f"])
        try fx.unmount()
        let again = fx.sh("CMKFS_CRASH_POINT=rekey-mid-copy \(Shell.quote(MountFixture.binary)) rekey \(vol) f --kms-dir \(fx.kms)")
        XCTAssertEqual(again.status, 86, "\(again)")
        XCTAssertEqual(py("""
            import json, sqlite3, sys
            db = sqlite3.connect(sys.argv[1])
            (key, value), = db.execute("SELECT key, value FROM meta WHERE key GLOB 'rekey:*'").fetchall()
            journal = json.loads(bytes(value))
            journal["xattrs"] = {x["name"]: x["value"] for x in journal["xattrs"] if x["name"] == "user.one"}
            db.execute("UPDATE meta SET value = ? WHERE key = ?", (json.dumps(journal).encode(), key)); db.commit()
            print(len(journal["xattrs"]))
            """, [vol + "/meta.db"]), "1\n")
        try fx.mount()
        XCTAssertTrue(fx.mountLog().contains("finished the interrupted rekey of f"), fx.mountLog())
        XCTAssertEqual(sh("cat \(mnt)/f"), "body\n")
        XCTAssertEqual(py("import os, sys; print(os.getxattr(sys.argv[1], 'user.one').decode())", [mnt + "/f"]), "one\n")
    }

    /// The worst moment: the new EDEK is journaled and the file is half new, half old blocks.
    func testCrashMidCopyIsFinishedFromTheJournal() throws {
        let sums = makeBigFiles(1)
        try fx.unmount()
        let before = edeks()
        let crashed = fx.sh("CMKFS_CRASH_POINT=rekey-mid-copy \(Shell.quote(MountFixture.binary)) rekey \(vol) --kms-dir \(fx.kms)")
        XCTAssertEqual(crashed.status, 86, "\(crashed)")
        XCTAssertEqual(sh("sqlite3 \(vol)/meta.db \"SELECT count(*) FROM meta WHERE key GLOB 'rekey:*'\"").trimmingCharacters(in: .whitespacesAndNewlines), "1")
        XCTAssertEqual(edeks(), before, "the old EDEK is still installed")
        // Half-switched, the file does not decrypt as a whole under either key: the mount must
        // finish the switch from the journal before serving it.
        try fx.mount()
        XCTAssertEqual(sh("cd \(mnt) && sha256sum f*"), sums)
        XCTAssertTrue(fx.mountLog().contains("finished the interrupted rekey of f0"), fx.mountLog())
        XCTAssertNotEqual(edeks(), before, "the journaled EDEK was installed")
        XCTAssertEqual(sh("sqlite3 \(vol)/meta.db \"SELECT count(*) FROM meta WHERE key GLOB 'rekey:*'\"").trimmingCharacters(in: .whitespacesAndNewlines), "0")
        try fx.remount()
        XCTAssertEqual(sh("cd \(mnt) && sha256sum f*"), sums)
        XCTAssertTrue(fx.cmkfs(["audit", "verify", vol]).succeeded)
    }

    func testKilledMountDuringRekeyRecoversAtTheNextMount() throws {
        let sums = makeBigFiles(3)
        let p = try startRekeyUntilACopyExists()
        defer { if p.isRunning { kill(p.processIdentifier, SIGKILL) }; p.waitUntilExit() }
        let pid = try XCTUnwrap(fx.lockPID())
        XCTAssertEqual(kill(pid, SIGKILL), 0)
        XCTAssertTrue(waitForExit(pid), "the mount outlived SIGKILL")
        p.waitUntilExit()
        sh("fusermount3 -u -z \(mnt)")
        try fx.mount()
        XCTAssertEqual(sh("cd \(mnt) && sha256sum f*"), sums)
        XCTAssertEqual((try? FileManager.default.contentsOfDirectory(atPath: vol + "/rekey")) ?? [], [])
        XCTAssertEqual(sh("sqlite3 \(vol)/meta.db \"SELECT count(*) FROM meta WHERE key GLOB 'rekey:*'\"").trimmingCharacters(in: .whitespacesAndNewlines), "0")
        XCTAssertTrue(fx.cmkfs(["audit", "verify", vol]).succeeded)
    }
}
