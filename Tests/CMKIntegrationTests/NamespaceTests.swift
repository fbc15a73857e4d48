import Foundation
import XCTest

/// Links, unlink, rename (with renameat2 flags), special files and exclusive create.
class NamespaceTests: IntegrationTestCase {
    func testHardLinkSharesContentAndSurvivesUnlinkOfTheOtherName() throws {
        makeRandomFile(plain + "/src", size: 10_000)
        sh("cp \(plain)/src \(mnt)/a && mkdir \(mnt)/dir && ln \(mnt)/a \(mnt)/dir/b")
        XCTAssertEqual(sh("stat -c %i \(mnt)/a"), sh("stat -c %i \(mnt)/dir/b"), "one inode")
        XCTAssertEqual(sha256(mnt + "/dir/b"), sha256(plain + "/src"))
        XCTAssertEqual(try fx.fileCount(), 1, "a hard link is not a new file")
        // A write through one name is read through the other.
        sh("printf 'PATCHED' | dd of=\(mnt)/dir/b bs=1 seek=4093 conv=notrunc status=none")
        sh("printf 'PATCHED' | dd of=\(plain)/src bs=1 seek=4093 conv=notrunc status=none")
        XCTAssertEqual(sha256(mnt + "/a"), sha256(plain + "/src"))
        sh("rm \(mnt)/a")
        XCTAssertEqual(sha256(mnt + "/dir/b"), sha256(plain + "/src"), "the other name still reads after the unlink")
        XCTAssertEqual(try fx.fileCount(), 1, "the key stays while a link remains")
        try fx.remount()
        XCTAssertEqual(sha256(mnt + "/dir/b"), sha256(plain + "/src"), "after a remount")
        XCTAssertEqual(sh("stat -c %h \(mnt)/dir/b"), "1\n")
        sh("rm \(mnt)/dir/b")
        XCTAssertEqual(try fx.fileCount(), 0)
    }

    /// A change made through one name of a hard-linked file shows through the other name right
    /// away, as on any local filesystem: link count and ctime after `ln` (tar and rsync check
    /// them), the size after an append, the mode after a chmod (permission checks use it).
    /// Each step first stats `a` so its attributes are freshly cached, then changes the file
    /// through another name, then looks at `a`.
    func testHardLinkNamesSeeEachOthersChangesImmediately() throws {
        sh("mkdir \(mnt)/t && head -c 300001 /dev/urandom > \(mnt)/t/a && printf hello > \(mnt)/t/small")
        XCTAssertEqual(sh("stat -c %h \(mnt)/t/a >/dev/null && ln \(mnt)/t/a \(mnt)/t/b && stat -c %h \(mnt)/t/a"), "2\n",
                       "link count of the old name right after ln")
        let tar = fx.sh("stat \(mnt)/t/a >/dev/null && ln \(mnt)/t/a \(mnt)/t/c && tar cf \(plain)/t.tar -C \(mnt)/t .")
        XCTAssertTrue(tar.succeeded, "tar right after ln: \(tar)")
        sh("ln \(mnt)/t/small \(mnt)/t/small2")
        XCTAssertEqual(sh("stat -c %s \(mnt)/t/small >/dev/null && printf ' world' >> \(mnt)/t/small2 && cat \(mnt)/t/small"), "hello world",
                       "read through one name right after an append through the other")
        XCTAssertEqual(sh("stat -c %a \(mnt)/t/small >/dev/null && chmod 600 \(mnt)/t/small2 && stat -c %a \(mnt)/t/small"), "600\n",
                       "mode through one name right after a chmod through the other")
        sh("printf secret > \(mnt)/t/p && ln \(mnt)/t/p \(mnt)/t/p2")
        let other = fx.sh("stat \(mnt)/t/p >/dev/null && chmod 600 \(mnt)/t/p2 && runuser -u nobody -- cat \(mnt)/t/p")
        XCTAssertNotEqual(other.status, 0, "another user must not read a file made 0600 through its other name: \(other)")
    }

    /// A removed file's inode number is soon reused by the backing filesystem while the kernel may
    /// not have forgotten the old node yet; the new object must get a node of its own, not the
    /// stale one (which answered "Stale file handle", as tar did when it replaced entries).
    func testReusedInodeNumbersNeverGiveStaleHandles() throws {
        XCTAssertEqual(py("""
            import os, sys
            d = sys.argv[1]
            seen = set(); reused = 0
            for i in range(3000):
                a, b = os.path.join(d, 'a%d' % i), os.path.join(d, 'b%d' % i)
                with open(a, 'w') as f: f.write('x')
                ino = os.stat(a).st_ino
                os.unlink(a)
                os.symlink('target', b) if i % 2 else open(b, 'w').close()
                st = os.lstat(b)
                reused += st.st_ino == ino
                os.readlink(b) if i % 2 else open(b).read()
                os.unlink(b)
            print('ok', 'reused' if reused else 'no reuse')
            """, [mnt]), "ok reused\n", "the backing filesystem reused inode numbers and nothing went stale")
    }

    /// Removing a file's last link removes its key rows (status file_count), a non-last link does not.
    func testUnlinkOfLastLinkRemovesKeyRows() throws {
        sh("for i in 1 2 3 4 5; do echo file $i > \(mnt)/f$i; done && ln \(mnt)/f5 \(mnt)/f5-link && mkfifo \(mnt)/fifo && ln -s f1 \(mnt)/sym")
        XCTAssertEqual(try fx.fileCount(), 5, "one key per regular file; fifos, symlinks and links have none")
        sh("rm \(mnt)/f1")
        XCTAssertEqual(try fx.fileCount(), 4)
        sh("rm \(mnt)/f5")
        XCTAssertEqual(try fx.fileCount(), 4, "f5-link still holds the file")
        XCTAssertEqual(sh("cat \(mnt)/f5-link"), "file 5\n")
        sh("rm \(mnt)/f5-link \(mnt)/fifo \(mnt)/sym")
        XCTAssertEqual(try fx.fileCount(), 3)
        // An unlinked file that is still open keeps working through its descriptor.
        XCTAssertEqual(py("""
            import os, sys
            p = sys.argv[1]
            fd = os.open(p, os.O_RDWR)
            os.unlink(p)
            assert not os.path.exists(p)
            os.pwrite(fd, b'still writable', 7)
            print(os.pread(fd, 100, 0).decode())
            os.close(fd)
            """, [mnt + "/f2"]), "file 2\nstill writable\n")
        XCTAssertEqual(try fx.fileCount(), 2)
        try fx.remount()
        XCTAssertEqual(try fx.fileCount(), 2)
        XCTAssertEqual(sh("ls \(mnt)"), "f3\nf4\n")
    }

    /// Unlinks delete key rows in batches (PendingForgets): a full batch at once, the rest within
    /// moments, and whatever is queued before the mount ends. Read straight from meta.db, not
    /// through `status`, which flushes the queue first.
    func testUnlinkedFilesLoseTheirKeyRowsSoonAndBeforeUnmountReturns() throws {
        let rows = { Int(self.sh("sqlite3 \(self.vol)/meta.db \"SELECT count(*) FROM file_attrs WHERE name = 'cmkfs.edek'\"")
            .trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1 }
        sh("mkdir \(mnt)/many && cd \(mnt)/many && seq 1 700 | xargs touch && echo kept > \(mnt)/kept")
        XCTAssertEqual(rows(), 701)
        sh("rm -rf \(mnt)/many")
        // The batch waits 20 ms; with no control request or unmount to write it, it must still go.
        var left = rows()
        waitUntil(deadline: 30, interval: 0.05) { left = rows(); return left == 1 }
        XCTAssertEqual(left, 1, "the rows of 700 unlinked files are gone soon (without a control request); only 'kept' has one")
        // With the batch held back (a long delay), a control request and the unmount each write it.
        try fx.unmount()
        let r = Shell.run("/usr/bin/env", ["CMKFS_FORGET_DELAY_MS=600000", MountFixture.binary, "mount", vol, mnt, "--kms-dir", fx.kms],
                          timeout: 60, logDir: fx.logs, label: "mount with a held-back forget batch")
        XCTAssertTrue(r.succeeded, "\(r)")
        sh("cd \(mnt) && seq 1 40 | xargs touch && seq 1 40 | xargs rm")
        XCTAssertEqual(rows(), 41, "the 40 rows wait for their batch")
        _ = try fx.status()
        XCTAssertEqual(rows(), 1, "a control request (status) writes the batch first")
        sh("cd \(mnt) && seq 1 30 | xargs touch && seq 1 30 | xargs rm")
        XCTAssertEqual(rows(), 31)
        try fx.unmount()
        XCTAssertEqual(rows(), 1, "the unmount writes the last batch: no orphan rows after a clean unmount")
        try fx.mount()
        XCTAssertEqual(sh("cat \(mnt)/kept"), "kept\n")
    }

    func testRenameOverExistingFileAndAcrossDirectories() throws {
        makeRandomFile(plain + "/A", size: 9000)
        makeRandomFile(plain + "/B", size: 5000)
        sh("cp \(plain)/A \(mnt)/a && cp \(plain)/B \(mnt)/b")
        XCTAssertEqual(try fx.fileCount(), 2)
        sh("mv \(mnt)/a \(mnt)/b")
        XCTAssertEqual(sha256(mnt + "/b"), sha256(plain + "/A"))
        XCTAssertEqual(sh("ls \(mnt)"), "b\n")
        XCTAssertEqual(try fx.fileCount(), 1, "the replaced file's key rows are gone")
        // Across directories: a file, then a whole directory.
        sh("mkdir -p \(mnt)/d1/deep \(mnt)/d2/sub && cp \(plain)/B \(mnt)/d1/deep/f && mv \(mnt)/b \(mnt)/d1/g")
        sh("mv \(mnt)/d1/deep/f \(mnt)/d2/sub/f-moved && mv \(mnt)/d1 \(mnt)/d2/sub/d1-moved")
        XCTAssertEqual(sh("cd \(mnt) && find . | LC_ALL=C sort"),
                       ".\n./d2\n./d2/sub\n./d2/sub/d1-moved\n./d2/sub/d1-moved/deep\n./d2/sub/d1-moved/g\n./d2/sub/f-moved\n")
        try fx.remount()
        XCTAssertEqual(sha256(mnt + "/d2/sub/d1-moved/g"), sha256(plain + "/A"))
        XCTAssertEqual(sha256(mnt + "/d2/sub/f-moved"), sha256(plain + "/B"))
        XCTAssertEqual(try fx.fileCount(), 2)
        // Over an existing file in another directory.
        sh("mv \(mnt)/d2/sub/f-moved \(mnt)/d2/sub/d1-moved/g")
        XCTAssertEqual(sha256(mnt + "/d2/sub/d1-moved/g"), sha256(plain + "/B"))
        XCTAssertEqual(try fx.fileCount(), 1)
    }

    static let renameat2 = """
    import ctypes, os, sys
    libc = ctypes.CDLL(None, use_errno=True)
    AT_FDCWD = -100
    def renameat2(old, new, flags):
        r = libc.syscall(316, AT_FDCWD, old.encode(), AT_FDCWD, new.encode(), flags)
        return 0 if r == 0 else ctypes.get_errno()
    old, new, flags = sys.argv[1], sys.argv[2], int(sys.argv[3])
    e = renameat2(old, new, flags)
    print('ok' if e == 0 else os.strerror(e))
    """

    func testRenameNoReplaceAndExchange() throws {
        sh("printf AAAA > \(mnt)/a && printf BBBBBB > \(mnt)/b && mkdir \(mnt)/dir && printf CC > \(mnt)/dir/c")
        // RENAME_NOREPLACE (1) onto an existing name: EEXIST, nothing moves.
        XCTAssertEqual(py(Self.renameat2, [mnt + "/a", mnt + "/b", "1"]), "File exists\n")
        XCTAssertEqual(sh("cat \(mnt)/a; echo; cat \(mnt)/b"), "AAAA\nBBBBBB")
        // ... onto a free name: an ordinary rename.
        XCTAssertEqual(py(Self.renameat2, [mnt + "/a", mnt + "/dir/a2", "1"]), "ok\n")
        XCTAssertEqual(sh("cat \(mnt)/dir/a2; test ! -e \(mnt)/a && echo gone"), "AAAAgone\n")
        // RENAME_EXCHANGE (2): both names stay, contents trade places, across directories too.
        XCTAssertEqual(py(Self.renameat2, [mnt + "/b", mnt + "/dir/a2", "2"]), "ok\n")
        XCTAssertEqual(sh("cat \(mnt)/b; echo; cat \(mnt)/dir/a2"), "AAAA\nBBBBBB")
        XCTAssertEqual(sh("stat -c %s \(mnt)/b \(mnt)/dir/a2"), "4\n6\n")
        // A file with a directory.
        XCTAssertEqual(py(Self.renameat2, [mnt + "/b", mnt + "/dir", "2"]), "ok\n")
        XCTAssertEqual(sh("cat \(mnt)/dir; echo; cat \(mnt)/b/c; echo; cat \(mnt)/b/a2"), "AAAA\nCC\nBBBBBB")
        // Exchange with a missing name: ENOENT.
        XCTAssertEqual(py(Self.renameat2, [mnt + "/dir", mnt + "/nothing", "2"]), "No such file or directory\n")
        XCTAssertEqual(try fx.fileCount(), 3, "exchange and no-replace drop no key")
        try fx.remount()
        XCTAssertEqual(sh("cat \(mnt)/dir; echo; cat \(mnt)/b/c; echo; cat \(mnt)/b/a2"), "AAAA\nCC\nBBBBBB")
    }

    func testFifoWorksAndDeviceNodesNeedCapMknod() throws {
        sh("mkfifo \(mnt)/pipe && test -p \(mnt)/pipe")
        XCTAssertEqual(sh("(echo through the fifo > \(mnt)/pipe &) ; cat \(mnt)/pipe", timeout: 30), "through the fifo\n")
        XCTAssertEqual(sh("stat -c %F \(mnt)/pipe"), "fifo\n")
        // Root makes device nodes (SpecialEntryTests); a user without CAP_MKNOD gets EPERM.
        sh("chmod 1777 \(mnt)")
        let char = shFails("runuser -u nobody -- mknod \(mnt)/null c 1 3")
        XCTAssertTrue(char.stderr.contains("Operation not permitted"), "\(char)")
        let block = shFails("runuser -u nobody -- mknod \(mnt)/blk b 7 0")
        XCTAssertTrue(block.stderr.contains("Operation not permitted"), "\(block)")
        sh("test ! -e \(mnt)/null && test ! -e \(mnt)/blk && test ! -e \(try fx.backing("null"))")
        sh("chmod 755 \(mnt)")
        // mknod of a regular file makes an ordinary encrypted file.
        XCTAssertEqual(py("""
            import os, stat, sys
            p = sys.argv[1]
            os.mknod(p, stat.S_IFREG | 0o640)
            with open(p, 'w') as f: f.write('made by mknod')
            print(open(p).read(), oct(os.stat(p).st_mode & 0o777))
            """, [mnt + "/regular"]), "made by mknod 0o640\n")
        XCTAssertEqual(try fx.fileCount(), 1)
        try fx.remount()
        XCTAssertEqual(sh("cat \(mnt)/regular; stat -c %F \(mnt)/pipe"), "made by mknodfifo\n")
    }

    func testExclusiveCreateOfExistingFileFails() throws {
        sh("printf original > \(mnt)/existing")
        XCTAssertEqual(py("""
            import errno, os, sys
            d = sys.argv[1]
            try:
                os.open(d + '/existing', os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                print('created?!')
            except FileExistsError:
                print('EEXIST')
            fd = os.open(d + '/fresh', os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            os.write(fd, b'new'); os.close(fd)
            print(open(d + '/fresh').read())
            """, [mnt]), "EEXIST\nnew\n")
        let noclobber = shFails("set -C; echo overwritten > \(mnt)/existing")
        XCTAssertTrue(noclobber.stderr.contains("exist"), "\(noclobber)")
        XCTAssertEqual(sh("cat \(mnt)/existing"), "original")
        XCTAssertEqual(try fx.fileCount(), 2)
    }
}
