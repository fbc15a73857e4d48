import Foundation
import XCTest

/// Encrypted file names on real mounts: nothing of a name reaches the backing store or the
/// database, names are bound to their directory, tampering is caught per entry, lookups stay
/// O(1), the namespace operations and the key commands keep working.
final class EncryptedNameTests: IntegrationTestCase {
    /// 255 bytes of UTF-8 (Linux's NAME_MAX): 127 two-byte characters and one more byte.
    static let longName = String(repeating: "é", count: 127) + "z"
    static let renameat2 = """
    import ctypes, os, sys
    libc = ctypes.CDLL(None, use_errno=True)
    def renameat2(old, new, flags):
        r = libc.syscall(316, -100, old.encode(), -100, new.encode(), flags)
        return 0 if r == 0 else ctypes.get_errno()
    e = renameat2(sys.argv[1], sys.argv[2], int(sys.argv[3]))
    print('ok' if e == 0 else os.strerror(e))
    """

    /// Every name, symlink target and content byte of the backing tree, plus meta.db (and its
    /// WAL), cmkfs.volume and mount.log, searched for the raw UTF-8 of each name. The audit log
    /// is left out on purpose: its records carry the plaintext path of each key use (that is
    /// what it is for; docs/threat-model.md says so).
    func searchBacking(_ needles: [String]) -> ShellResult {
        let program = """
        import os, sys
        vol, needles = sys.argv[1], [n.encode() for n in sys.argv[2:]]
        blobs = []
        for root, dirs, files in os.walk(vol + '/data'):
            for n in dirs + files:
                p = os.path.join(root, n)
                blobs.append(('name of ' + p, n.encode()))
                if os.path.islink(p):
                    blobs.append(('target of ' + p, os.readlink(p).encode()))
                elif os.path.isfile(p):
                    blobs.append(('content of ' + p, open(p, 'rb').read()))
        for n in ['meta.db', 'meta.db-wal', 'cmkfs.volume', 'mount.log']:
            if os.path.exists(vol + '/' + n):
                blobs.append((n, open(vol + '/' + n, 'rb').read()))
        found = [(what, n) for what, b in blobs for n in needles if n in b]
        print('searched %d blobs, %d bytes' % (len(blobs), sum(len(b) for _, b in blobs)))
        for what, n in found:
            print('FOUND %r in %s' % (n, what))
        sys.exit(1 if found else 0)
        """
        return python(program, [vol] + needles)
    }

    func assertBackingLacks(_ needles: [String], _ when: String, file: StaticString = #filePath, line: UInt = #line) {
        let r = searchBacking(needles)
        XCTAssertTrue(r.succeeded, "\(when): a plaintext name is in the backing store: \(r)", file: file, line: line)
        print("[cmkfs-it] \(when): \(r.stdout.split(separator: "\n").first ?? "")")
    }

    func testNoPlaintextNameInTheBackingTreeOrTheDatabase() throws {
        let names = ["payroll-2026-q3.xlsx", "Grüße-日本-résumé.txt", Self.longName, "secret-project-falcon", "shortcut-to-payroll",
                     "hardlink-of-payroll", "long-symlink-target-name"]
        let program = """
        import os, sys
        d, long = sys.argv[1], sys.argv[2]
        os.makedirs(d + '/secret-project-falcon/' + long)
        open(d + '/secret-project-falcon/payroll-2026-q3.xlsx', 'w').write('q3 numbers')
        open(d + '/Grüße-日本-résumé.txt', 'w').write('hallo')
        open(d + '/secret-project-falcon/' + long + '/' + long, 'w').write('deep')
        os.symlink('secret-project-falcon/payroll-2026-q3.xlsx', d + '/shortcut-to-payroll')
        os.symlink('long-symlink-target-name/' + long, d + '/secret-project-falcon/' + long + '/s')
        os.link(d + '/secret-project-falcon/payroll-2026-q3.xlsx', d + '/hardlink-of-payroll')
        os.mkfifo(d + '/secret-project-falcon/' + long + '/fifo-' + long[:100])
        print(sorted(os.listdir(d)) == sorted(['secret-project-falcon', 'Grüße-日本-résumé.txt', 'shortcut-to-payroll', 'hardlink-of-payroll']),
              open(d + '/shortcut-to-payroll').read(), os.readlink(d + '/secret-project-falcon/' + long + '/s') == 'long-symlink-target-name/' + long)
        """
        XCTAssertEqual(py(program, [mnt, Self.longName]), "True q3 numbers True\n")
        // Positive control: the names are there through the mount, in full.
        XCTAssertEqual(sh("ls \(mnt)/secret-project-falcon/\(Shell.quote(Self.longName)) | wc -l"), "3\n")
        XCTAssertEqual(sh("cat \(mnt)/secret-project-falcon/\(Shell.quote(Self.longName))/\(Shell.quote(Self.longName))"), "deep")
        XCTAssertEqual(sh("stat -c %s \(mnt)/shortcut-to-payroll"), "\("secret-project-falcon/payroll-2026-q3.xlsx".utf8.count)\n",
                       "a symlink's size is its plaintext target's length")
        XCTAssertEqual(sh("stat -f -c %l \(mnt)"), "255\n", "statfs reports a name max of 255")
        // Also each name's first 8 bytes, so a partly leaked name is caught too.
        let needles = names + names.map { String(decoding: Array($0.utf8).prefix(8), as: UTF8.self) }.filter { $0.utf8.count == 8 }
        assertBackingLacks(needles, "while mounted")
        try fx.unmount()
        assertBackingLacks(needles, "after unmount")
        // Positive control: the same search finds a name planted in the backing tree.
        sh("mkdir \(vol)/data/planted && printf 'Grüße-日本-résumé.txt' > \(vol)/data/planted/x")
        let control = searchBacking(needles)
        XCTAssertEqual(control.status, 1, "\(control)")
        XCTAssertTrue(control.stdout.contains("FOUND"), "\(control)")
        sh("rm -r \(vol)/data/planted")
    }

    func testTheSameNameInTwoDirectoriesHasDifferentCiphertext() throws {
        sh("mkdir \(mnt)/one \(mnt)/two && touch \(mnt)/one/same \(mnt)/two/same && mkdir \(mnt)/one/samedir \(mnt)/two/samedir")
        for name in ["same", "samedir"] {
            let a = URL(fileURLWithPath: try fx.backing("one/" + name)).lastPathComponent
            let b = URL(fileURLWithPath: try fx.backing("two/" + name)).lastPathComponent
            XCTAssertNotEqual(a, b, "the directory id is a tweak")
            XCTAssertTrue(FileManager.default.fileExists(atPath: try fx.backing("one/" + name)))
        }
        // The same name again in the same directory (after a delete) gives the same backing
        // name: the encryption is deterministic, which is what makes lookups O(1).
        let before = try fx.backing("one/same")
        sh("rm \(mnt)/one/same && touch \(mnt)/one/same")
        XCTAssertEqual(try fx.backing("one/same"), before)
        XCTAssertTrue(FileManager.default.fileExists(atPath: before))
    }

    func testATamperedNameIsSkippedAndLoggedNotShownWrong() throws {
        sh("mkdir \(mnt)/d1 \(mnt)/d2 && echo good > \(mnt)/d1/good && echo victim > \(mnt)/d1/victim && echo moved > \(mnt)/d1/moved")
        let victim = try fx.backing("d1/victim"), moved = try fx.backing("d1/moved"), d2 = try fx.backing("d2")
        try fx.unmount()
        // Flip one character of the encrypted name (still valid base64url), and move another
        // entry into a different directory (its name is bound to the old directory's id).
        var chars = Array(URL(fileURLWithPath: victim).lastPathComponent)
        chars[3] = chars[3] == "A" ? "B" : "A"
        let tampered = URL(fileURLWithPath: victim).deletingLastPathComponent().path + "/" + String(chars)
        XCTAssertEqual(rename(victim, tampered), 0)
        XCTAssertEqual(rename(moved, d2 + "/" + URL(fileURLWithPath: moved).lastPathComponent), 0)
        try fx.mount()
        XCTAssertEqual(sh("ls \(mnt)/d1"), "good\n", "the tampered entry is skipped, the good one listed")
        XCTAssertEqual(sh("ls \(mnt)/d2"), "", "an entry moved from another directory is skipped")
        XCTAssertEqual(sh("cat \(mnt)/d1/good"), "good\n")
        shFails("cat \(mnt)/d1/victim")
        let log = fx.mountLog()
        XCTAssertTrue(log.contains("readdir: skipping backing entry"), log)
        XCTAssertTrue(log.contains("failed authentication"), log)
        XCTAssertFalse(log.contains("victim"), "the log names the backing entry, never a plaintext name")
    }

    func testNamespaceOperationsThroughShellTools() throws {
        let long = Shell.quote(Self.longName)
        let long2 = Shell.quote(String(repeating: "ü", count: 100) + "-second")
        sh("""
           cd \(mnt) && mkdir -p a/b/c && echo one > a/b/c/f && mkdir \(long) && echo two > \(long)/\(long)
           mv a/b/c/f a/renamed && mv \(long)/\(long) \(long)/short && mv \(long)/short \(long)/\(long2)
           mv a/b \(long)/moved-dir && ln a/renamed \(long)/hard-\(String(repeating: "h", count: 200))
           ln -s ../a/renamed \(long)/sym && ln -s \(long) top-sym && mkdir empty && rmdir empty
           """)
        XCTAssertEqual(sh("cd \(mnt) && find . | LC_ALL=C sort"), """
            .
            ./a
            ./a/renamed
            ./top-sym
            ./\(Self.longName)
            ./\(Self.longName)/hard-\(String(repeating: "h", count: 200))
            ./\(Self.longName)/moved-dir
            ./\(Self.longName)/moved-dir/c
            ./\(Self.longName)/sym
            ./\(Self.longName)/\(String(repeating: "ü", count: 100))-second

            """)
        XCTAssertEqual(sh("cat \(mnt)/\(long)/sym \(mnt)/top-sym/\(long2)"), "one\ntwo\n")
        XCTAssertEqual(sh("stat -c %h \(mnt)/a/renamed"), "2\n")
        XCTAssertEqual(sh("readlink \(mnt)/top-sym"), Self.longName + "\n")
        let notEmpty = shFails("rmdir \(mnt)/\(long)/moved-dir")
        XCTAssertTrue(notEmpty.stderr.contains("not empty"), "\(notEmpty)")
        // RENAME_NOREPLACE and RENAME_EXCHANGE, with a long name on one side.
        XCTAssertEqual(py(Self.renameat2, [mnt + "/a/renamed", mnt + "/top-sym", "1"]), "File exists\n")
        XCTAssertEqual(py(Self.renameat2, [mnt + "/a/renamed", mnt + "/" + Self.longName + "/sym", "2"]), "ok\n")
        XCTAssertEqual(sh("readlink \(mnt)/a/renamed; cat \(mnt)/\(long)/sym"), "../a/renamed\none\n")
        // Long-name rows follow the entries: one per long name alive, none once they are gone.
        let rows = { self.sh("sqlite3 \(self.vol)/meta.db 'SELECT count(*) FROM long_names'") }
        XCTAssertEqual(rows(), "3\n", "the long directory, the long file and the long hard link")
        try fx.remount()
        XCTAssertEqual(sh("cd \(mnt) && find . | LC_ALL=C sort | wc -l"), "10\n")
        sh("rm -rf \(mnt)/\(long) && rmdir \(mnt)/a/b 2>/dev/null; rm -rf \(mnt)/a \(mnt)/top-sym")
        XCTAssertEqual(sh("ls -A \(mnt)"), "")
        XCTAssertEqual(rows(), "0\n")
        XCTAssertEqual(sh("ls -A \(vol)/data"), ".cmkfs-dirid\n", "only the root's directory id is left")
        XCTAssertEqual(try fx.fileCount(), 0)
    }

    func testTenThousandEntriesListAndLookUpLikeAPlainMount() throws {
        let plainVol = fx.root + "/vol-plain", plainMnt = fx.root + "/mnt-plain"
        try FileManager.default.createDirectory(atPath: plainMnt, withIntermediateDirectories: false)
        try fx.initVolume(plainVol, plaintextNames: true)
        try fx.mount(plainVol, at: plainMnt)
        var results: [String: [String: Double]] = [:]
        for (label, volume, mountpoint) in [("encrypted names", vol, mnt), ("plaintext names", plainVol, plainMnt)] {
            var row: [String: Double] = [:]
            row["create"] = timed("\(label): create 10,000 files in one directory",
                                  "mkdir \(mountpoint)/d && cd \(mountpoint)/d && seq -f 'entry-%05g.txt' 1 10000 | xargs touch")
            try fx.unmount(mountpoint)
            try fx.mount(volume, at: mountpoint)
            row["readdir"] = timed("\(label): ls (readdir) of 10,000 entries, cold", "ls \(mountpoint)/d | wc -l")
            try fx.unmount(mountpoint)
            try fx.mount(volume, at: mountpoint)
            row["lookup"] = timed("\(label): stat 10,000 names in shuffled order, cold",
                                  "cd \(mountpoint)/d && seq -f 'entry-%05g.txt' 1 10000 | shuf | xargs stat -c %s | wc -l")
            row["ls -l"] = timed("\(label): ls -l (readdir + lookups), warm", "ls -l \(mountpoint)/d | wc -l")
            XCTAssertEqual(sh("ls \(mountpoint)/d | wc -l"), "10000\n")
            XCTAssertEqual(sh("ls \(mountpoint)/d | head -1; ls \(mountpoint)/d | tail -1"), "entry-00001.txt\nentry-10000.txt\n")
            results[label] = row
        }
        for what in ["create", "readdir", "lookup", "ls -l"] {
            let e = results["encrypted names"]?[what] ?? 0, p = results["plaintext names"]?[what] ?? 0
            print("[cmkfs-it] 10,000 entries, \(what): encrypted \(String(format: "%.2f", e)) s, plaintext \(String(format: "%.2f", p)) s"
                  + (p > 0 ? String(format: " (×%.2f)", e / p) : ""))
        }
    }

    func testRevokeMakesListingFailWithEACCESAndEnableRestoresIt() throws {
        sh("mkdir \(mnt)/dir && echo x > \(mnt)/dir/file")
        let revoke = fx.cmkfs(["key", "revoke", vol, "--kms-dir", fx.kms])
        XCTAssertTrue(revoke.succeeded, "\(revoke)")
        let ls = shFails("ls \(mnt)")
        XCTAssertTrue(ls.stderr.contains("Permission denied"), "\(ls)")
        let nested = shFails("ls \(mnt)/dir/")
        XCTAssertTrue(nested.stderr.contains("Permission denied"), "\(nested)")
        shFails("touch \(mnt)/new-while-revoked")
        XCTAssertTrue(fx.cmkfs(["key", "enable", vol, "--kms-dir", fx.kms]).succeeded)
        XCTAssertEqual(sh("ls \(mnt); cat \(mnt)/dir/file"), "dir\nx\n")
        let events = fx.cmkfs(["audit", "show", vol, "--event", "name-key", "--json"]).stdout
        XCTAssertTrue(events.contains("\"denied\""), "the refused unwrap of the name key is audited: \(events)")
        XCTAssertGreaterThanOrEqual(events.split(separator: "\n").count, 3, events)
    }

    /// No plaintext name outlives the name key in the daemon: the names noted on inodes for
    /// audit paths are dropped when the name key leaves the cache (`cache flush`, `key revoke`),
    /// and noted again by the lookups that follow once it is back.
    func testNamesNotedForAuditPathsGoWithTheNameKey() throws {
        func noted() -> Double? {
            let r = fx.cmkfs(["metrics", vol])
            XCTAssertTrue(r.succeeded, "\(r)")
            return r.stdout.split(separator: "\n").first { $0.hasPrefix("cmkfs_audit_noted_names ") }
                .flatMap { Double($0.dropFirst("cmkfs_audit_noted_names ".count)) }
        }
        sh("mkdir \(mnt)/dir && echo x > \(mnt)/dir/file && ls -lR \(mnt) > /dev/null && cat \(mnt)/dir/file > /dev/null")
        XCTAssertGreaterThan(try XCTUnwrap(noted()), 0, "lookups noted names")
        XCTAssertTrue(fx.cmkfs(["cache", "flush", vol]).succeeded)
        XCTAssertEqual(noted(), 0, "the flush took the name key, and every noted name with it")
        sh("ls -l \(mnt)/dir > /dev/null && cat \(mnt)/dir/file > /dev/null")
        XCTAssertGreaterThan(try XCTUnwrap(noted()), 0, "lookups after the flush note names again")
        let revoke = fx.cmkfs(["key", "revoke", vol, "--kms-dir", fx.kms])
        XCTAssertTrue(revoke.succeeded, "\(revoke)")
        XCTAssertEqual(noted(), 0, "the revocation took the name key, and every noted name with it")
        shFails("cat \(mnt)/dir/file")
        XCTAssertEqual(noted(), 0, "nothing is noted while the name key is revoked")
        XCTAssertTrue(fx.cmkfs(["key", "enable", vol, "--kms-dir", fx.kms]).succeeded)
        XCTAssertEqual(sh("ls \(mnt)/dir && cat \(mnt)/dir/file"), "file\nx\n")
        XCTAssertGreaterThan(try XCTUnwrap(noted()), 0, "lookups after enable note names again")
    }

    /// The kill switch stops a listing in progress: the names a readdir decrypted before
    /// `key revoke` are dropped with the name key, so the rest of the stream is refused (EACCES)
    /// rather than served from the daemon's memory; after `key enable` a new listing works.
    func testRevokeStopsAListingInProgress() throws {
        sh("mkdir \(mnt)/big && cd \(mnt)/big && for i in $(seq 1 300); do : > entry-with-a-rather-long-name-to-fill-pages-$i; done")
        let program = """
            import os, subprocess, sys
            path, cmkfs, vol, kms = sys.argv[1:5]
            seen = 0
            with os.scandir(path) as it:
                next(it); seen = 1
                subprocess.run([cmkfs, 'key', 'revoke', vol, '--kms-dir', kms], check=True, capture_output=True)
                try:
                    for _ in it: seen += 1
                    print('listed %d entries after the revoke' % seen)
                except PermissionError:
                    print('refused after %d entries' % seen)
            """
        let said = py(program, [mnt + "/big", MountFixture.binary, vol, fx.kms])
        XCTAssertTrue(said.hasPrefix("refused after "), said)
        XCTAssertLessThan(Int(said.split(separator: " ")[2]) ?? 300, 300, said)
        XCTAssertTrue(fx.cmkfs(["key", "enable", vol, "--kms-dir", fx.kms]).succeeded)
        XCTAssertEqual(sh("ls \(mnt)/big | wc -l"), "300\n")
    }

    func testRotatePurgeAndRekeyKeepNamesReadable() throws {
        sh("mkdir '\(mnt)/dossier été' && printf contenu > '\(mnt)/dossier été/naïve file' && ln -s 'dossier été/naïve file' \(mnt)/lien")
        let rotate = fx.cmkfs(["key", "rotate", vol, "--kms-dir", fx.kms])
        XCTAssertTrue(rotate.succeeded, "\(rotate)")
        XCTAssertEqual(sh("sqlite3 \(vol)/meta.db \"SELECT value FROM meta WHERE key = 'name_key_version'\""), "2\n",
                       "the rotation re-wrapped the name key")
        let purge = fx.cmkfs(["key", "purge", vol, "--version", "1", "--kms-dir", fx.kms])
        XCTAssertTrue(purge.succeeded, "\(purge)")
        XCTAssertEqual(sh("ls \(mnt) && cat \(mnt)/lien"), "dossier été\nlien\ncontenu")
        try fx.remount()
        XCTAssertEqual(sh("ls '\(mnt)/dossier été' && cat \(mnt)/lien"), "naïve file\ncontenu")
        // Rekey by mount path, mounted and then offline.
        let before = sha256(try fx.backing("dossier été/naïve file"))
        let mounted = fx.cmkfs(["rekey", vol, "dossier été/naïve file", "--kms-dir", fx.kms, "--json"])
        XCTAssertTrue(mounted.succeeded, "\(mounted)")
        XCTAssertNotEqual(sha256(try fx.backing("dossier été/naïve file")), before)
        try fx.unmount()
        let offline = fx.cmkfs(["rekey", vol, "dossier été", "--kms-dir", fx.kms, "--json"])
        XCTAssertTrue(offline.succeeded, "\(offline)")
        let summary = (try? JSONSerialization.jsonObject(with: Data(offline.stdout.utf8))) as? [String: Any]
        XCTAssertEqual(summary?["rekeyed"] as? Int, 1, offline.stdout)
        try fx.mount()
        XCTAssertEqual(sh("cat \(mnt)/lien"), "contenu")
        // The audit records name the file by its plaintext path.
        let records = fx.cmkfs(["audit", "show", vol, "--event", "rekey", "--json"]).stdout
        XCTAssertTrue(records.contains("/dossier été/naïve file"), records)
        let opens = fx.cmkfs(["audit", "show", vol, "--event", "open", "--json"]).stdout
        XCTAssertTrue(opens.contains("/dossier été/naïve file"), opens)
    }

    func testPlaintextNamesVolumesKeepWorking() throws {
        let oldVol = fx.root + "/vol-old", oldMnt = fx.root + "/mnt-old"
        try FileManager.default.createDirectory(atPath: oldMnt, withIntermediateDirectories: false)
        try fx.initVolume(oldVol, plaintextNames: true)
        XCTAssertTrue(sh("cat \(oldVol)/cmkfs.volume").contains("\"names\" : \"plaintext\""))
        XCTAssertTrue(sh("cat \(oldVol)/cmkfs.volume").contains("\"format\" : 1"))
        try fx.mount(oldVol, at: oldMnt)
        sh("mkdir \(oldMnt)/dir && echo in-clear > \(oldMnt)/dir/name && ln -s dir/name \(oldMnt)/s")
        XCTAssertEqual(sh("ls \(oldVol)/data/dir && readlink \(oldVol)/data/s"), "name\ndir/name\n", "names stay in clear")
        XCTAssertEqual(try fx.backing("dir/name", volume: oldVol), oldVol + "/data/dir/name")
        XCTAssertEqual(sh("cat \(oldMnt)/s"), "in-clear\n")
        try fx.unmount(oldMnt)
    }
}
