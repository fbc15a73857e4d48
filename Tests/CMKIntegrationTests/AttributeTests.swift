import Foundation
import XCTest

/// Extended attributes, ownership and modes, times, permission checks for other users, statfs
/// and fallocate.
class AttributeTests: IntegrationTestCase {
    /// Opening a file reads its header without touching its access time (O_NOATIME); reads
    /// through the open file then update it as they would locally (relatime: the atime is
    /// older than the mtime), so the flag must be cleared on every open.
    func testOpeningKeepsTheAccessTimeAndReadingUpdatesIt() throws {
        sh("printf data > \(mnt)/f && touch -a -d '2001-02-03 04:05:06' \(mnt)/f")
        try fx.remount()
        let backing = try fx.backing("f")
        func atime() throws -> Int { Int(sh("stat -c %X \(Shell.quote(backing))").trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1 }
        let old = try atime()
        XCTAssertLessThan(old, 1_000_000_000 + 100_000_000, "the touch set the 2001 atime on the backing file")
        XCTAssertEqual(py("import os, sys\nos.close(os.open(sys.argv[1], os.O_RDONLY))\nprint('opened')", [mnt + "/f"]), "opened\n")
        XCTAssertEqual(try atime(), old, "an open without a read keeps the access time")
        XCTAssertEqual(sh("cat \(mnt)/f"), "data")
        XCTAssertGreaterThan(try atime(), old, "a read through the mount updates the access time")
    }

    func testUserExtendedAttributes() throws {
        sh("printf data > \(mnt)/f && mkdir \(mnt)/dir && ln -s f \(mnt)/link")
        let program = """
        import errno, os, sys
        d = sys.argv[1]
        f = d + '/f'
        def err(call):
            try:
                call(); return 'ok'
            except OSError as e:
                return errno.errorcode[e.errno]
        big = bytes(range(256)) * 240            # 61440 bytes
        os.setxattr(f, 'user.color', b'blue')
        os.setxattr(f, 'user.empty', b'')
        os.setxattr(f, 'user.big', big)
        assert os.getxattr(f, 'user.color') == b'blue'
        assert os.getxattr(f, 'user.empty') == b''
        assert os.getxattr(f, 'user.big') == big
        assert sorted(os.listxattr(f)) == ['user.big', 'user.color', 'user.empty'], os.listxattr(f)
        os.setxattr(f, 'user.color', b'green')
        assert os.getxattr(f, 'user.color') == b'green'
        print('create-existing', err(lambda: os.setxattr(f, 'user.color', b'x', os.XATTR_CREATE)))
        print('replace-missing', err(lambda: os.setxattr(f, 'user.nope', b'x', os.XATTR_REPLACE)))
        print('get-missing', err(lambda: os.getxattr(f, 'user.nope')))
        print('trusted', err(lambda: os.setxattr(f, 'trusted.x', b'x')))
        print('on-dir', err(lambda: os.setxattr(d + '/dir', 'user.x', b'x')))
        # The kernel itself refuses user.* on symlinks (EPERM) before asking the filesystem.
        print('on-symlink', err(lambda: os.setxattr(d + '/link', 'user.x', b'x', follow_symlinks=False)))
        print('get-on-dir', err(lambda: os.getxattr(d + '/dir', 'user.x')))
        print('list-on-dir', os.listxattr(d + '/dir'))
        os.removexattr(f, 'user.empty')
        print('remove-missing', err(lambda: os.removexattr(f, 'user.empty')))
        print(sorted(os.listxattr(f)))
        # The file's content is untouched by all of this.
        print(open(f).read())
        """
        XCTAssertEqual(py(program, [mnt]), """
            create-existing EEXIST
            replace-missing ENODATA
            get-missing ENODATA
            trusted ENOTSUP
            on-dir ENOTSUP
            on-symlink EPERM
            get-on-dir ENODATA
            list-on-dir []
            remove-missing ENODATA
            ['user.big', 'user.color']
            data

            """)
        // Attributes follow the file through a rename and a hard link, and survive a remount.
        sh("mv \(mnt)/f \(mnt)/g && ln \(mnt)/g \(mnt)/h")
        try fx.remount()
        XCTAssertEqual(py("""
            import os, sys
            h = sys.argv[1] + '/h'
            print(os.getxattr(h, 'user.color').decode(), len(os.getxattr(h, 'user.big')), sorted(os.listxattr(h)))
            """, [mnt]), "green 61440 ['user.big', 'user.color']\n")
        // A new file with the same name starts without attributes.
        sh("rm \(mnt)/g \(mnt)/h && printf new > \(mnt)/g")
        XCTAssertEqual(py("import os, sys; print(os.listxattr(sys.argv[1]))", [mnt + "/g"]), "[]\n")
    }

    func testChmodChownAndTimesShowInStat() throws {
        sh("printf x > \(mnt)/f && mkdir \(mnt)/d && ln -s f \(mnt)/l")
        sh("chmod 640 \(mnt)/f && chmod 2751 \(mnt)/d")
        sh("chown 1234:5678 \(mnt)/f && chown -h 42:43 \(mnt)/l")
        sh("touch -m -d '2001-02-03 04:05:06 UTC' \(mnt)/f && touch -a -d '1999-12-31 23:59:58 UTC' \(mnt)/f")
        sh("touch -d '2010-10-10 10:10:10.5 UTC' \(mnt)/d")
        let expected = "640 1234:5678 981173106 946684798\n2751 0:0 1286705410\n777 42:43\n"
        let query = "stat -c '%a %u:%g %Y %X' \(mnt)/f && stat -c '%a %u:%g %Y' \(mnt)/d && stat -c '%a %u:%g' \(mnt)/l"
        XCTAssertEqual(sh(query), expected)
        // What the mount shows is what the backing tree holds: it survives a remount.
        try fx.remount()
        XCTAssertEqual(sh(query), expected, "after a remount")
        // Through an open descriptor (fchmod/fchown/futimens) as well.
        XCTAssertEqual(py("""
            import os, sys
            fd = os.open(sys.argv[1], os.O_RDWR)
            os.fchmod(fd, 0o600); os.fchown(fd, 7, 8); os.utime(fd, ns=(10**9, 2 * 10**9 + 123))
            st = os.fstat(fd); os.close(fd)
            st2 = os.stat(sys.argv[1])
            print(oct(st.st_mode & 0o7777), st.st_uid, st.st_gid, st.st_mtime_ns, oct(st2.st_mode & 0o7777), st2.st_mtime_ns)
            """, [mnt + "/f"]), "0o600 7 8 2000000123 0o600 2000000123\n")
    }

    func testOtherUsersGetNormalPermissionChecks() throws {
        sh("printf secret > \(mnt)/private && chmod 600 \(mnt)/private && printf public > \(mnt)/public && chmod 644 \(mnt)/public")
        let denied = shFails("runuser -u nobody -- cat \(mnt)/private")
        XCTAssertTrue(denied.stderr.contains("Permission denied"), "\(denied)")
        XCTAssertEqual(sh("runuser -u nobody -- cat \(mnt)/public"), "public")
        let noWrite = shFails("runuser -u nobody -- sh -c 'echo x >> \(mnt)/public'")
        XCTAssertTrue(noWrite.stderr.contains("Permission denied"), "\(noWrite)")
        let noCreate = shFails("runuser -u nobody -- touch \(mnt)/new")
        XCTAssertTrue(noCreate.stderr.contains("Permission denied"), "\(noCreate)")
        // A directory nobody may write: new entries belong to nobody, and to nobody only.
        sh("mkdir -m 1777 \(mnt)/shared")
        sh("runuser -u nobody -- sh -c 'printf mine > \(mnt)/shared/n && chmod 600 \(mnt)/shared/n && mkdir \(mnt)/shared/nd'")
        XCTAssertEqual(sh("stat -c '%U %a' \(mnt)/shared/n \(mnt)/shared/nd"), "nobody 600\nnobody 755\n")
        XCTAssertEqual(sh("runuser -u nobody -- cat \(mnt)/shared/n"), "mine")
        XCTAssertEqual(sh("cat \(mnt)/shared/n"), "mine", "root reads it")
        XCTAssertEqual(sh("stat -c %U \(try fx.backing("shared/n"))"), "nobody\n", "the backing file is owned by the creator too")
        XCTAssertEqual(try fx.fileCount(), 3)
    }

    /// Writes, truncates and chowns by a caller without CAP_FSETID clear setuid (and setgid with
    /// group-execute), as on a local filesystem. The mount asks the kernel for
    /// FUSE_HANDLE_KILLPRIV_V2 (KernelChannel), which leaves this to cmkfs: without
    /// `killSetIDBits` the modes below stay 4777/6777.
    func testUnprivilegedWritesTruncatesAndChownsClearSetIDBitsAtOnce() throws {
        XCTAssertTrue(fx.mountLog().contains("FUSE_HANDLE_KILLPRIV_V2 on"), fx.mountLog())
        let mode = { self.sh("stat -c %a \(self.mnt)/s").trimmingCharacters(in: .whitespacesAndNewlines) }
        sh("echo hello > \(mnt)/s && chmod 4777 \(mnt)/s")
        sh("runuser -u nobody -- sh -c 'echo x >> \(mnt)/s'")
        XCTAssertEqual(mode(), "777", "a write by nobody clears setuid, visible at once")
        sh("chmod 6777 \(mnt)/s && runuser -u nobody -- truncate -s 2 \(mnt)/s")
        XCTAssertEqual(mode(), "777", "a truncate by nobody clears setuid and setgid")
        sh("chmod 2767 \(mnt)/s && runuser -u nobody -- sh -c 'echo x >> \(mnt)/s'")
        XCTAssertEqual(mode(), "2767", "setgid without group-execute is a locking mark and stays")
        sh("chmod 4777 \(mnt)/s && echo root >> \(mnt)/s")
        XCTAssertEqual(mode(), "4777", "root (CAP_FSETID) keeps the bits")
        sh("chown nobody \(mnt)/s")
        XCTAssertEqual(mode(), "777", "chown clears setuid")
        XCTAssertEqual(sh("cat \(mnt)/s"), "hex\nroot\n")
        try fx.remount()
        XCTAssertEqual(mode(), "777", "the cleared mode is the backing file's")
    }

    /// tar chowns every file it writes, and the kernel asks cmkfs to drop the set-id bits with
    /// each chown (FUSE_HANDLE_KILLPRIV_V2). A file without such bits has nothing to drop: its
    /// backing file is not opened for the check (an inotify watch sees no open), which used to
    /// cost an open through /proc, an fstat and a close per chown (issue 20).
    func testChownOfAFileWithoutSetIDBitsDoesNotOpenTheBackingFile() throws {
        sh("echo hello > \(mnt)/plain && chmod 755 \(mnt)/plain")
        let watch = """
        import ctypes, os, struct, subprocess, sys
        libc = ctypes.CDLL(None, use_errno=True)
        IN_OPEN, IN_NONBLOCK = 0x20, 0o4000
        fd = libc.inotify_init1(IN_NONBLOCK)
        assert fd >= 0 and libc.inotify_add_watch(fd, sys.argv[1].encode(), IN_OPEN) >= 0
        subprocess.run(sys.argv[2:], check=True)
        try: data = os.read(fd, 65536)
        except BlockingIOError: data = b''
        opens = 0
        while data:
            wd, mask, cookie, length = struct.unpack_from('iIII', data)
            opens += 1
            data = data[16 + length:]
        print(opens)
        """
        let backing = try fx.backing("plain")
        let opens = python(watch, [backing, "chown", "nobody:nogroup", mnt + "/plain"])
        XCTAssertEqual(opens.status, 0, "\(opens)")
        XCTAssertEqual(opens.stdout, "0\n", "the chown opened the backing file")
        XCTAssertEqual(sh("stat -c '%U %a' \(mnt)/plain"), "nobody 755\n")
        // A file with a set-id bit still loses it at a chown, and the mode and owner are the
        // backing file's after a remount.
        sh("chmod 4755 \(mnt)/plain && chown root \(mnt)/plain")
        XCTAssertEqual(sh("stat -c '%U %a' \(mnt)/plain"), "root 755\n")
        sh("chmod 2750 \(mnt)/plain && chown nobody \(mnt)/plain")
        XCTAssertEqual(sh("stat -c '%U %a' \(mnt)/plain"), "nobody 750\n", "setgid with group-execute goes too")
        try fx.remount()
        XCTAssertEqual(sh("stat -c '%U %a' \(mnt)/plain"), "nobody 750\n")
        XCTAssertEqual(sh("cat \(mnt)/plain"), "hello\n")
    }

    func testStatfsReportsTheBackingFilesystem() throws {
        let df = sh("df -P \(mnt)")
        XCTAssertTrue(df.contains("cmkfs:\(vol)"), df)
        XCTAssertEqual(sh("stat -f -c '%t %S %b' \(mnt)").split(separator: " ").dropFirst().joined(separator: " "),
                       sh("stat -f -c '%t %S %b' \(vol)/data").split(separator: " ").dropFirst().joined(separator: " "),
                       "block size and total blocks of the backing filesystem")
        let free = Int(sh("stat -f -c %a \(mnt)").trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
        XCTAssertGreaterThan(free, 0)
        XCTAssertEqual(MountFixture.mountType(mnt), "fuse.cmkfs")
    }

    func testFallocateReservesAndPunchHoleIsRefused() throws {
        sh("fallocate -l 1M \(mnt)/reserved")
        XCTAssertEqual(sh("stat -c %s \(mnt)/reserved"), "1048576\n")
        sh("cmp -n 1048576 \(mnt)/reserved /dev/zero")
        // The backing range is really allocated.
        let kib = Int(sh("du -k \(try fx.backing("reserved")) | cut -f1").trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
        XCTAssertGreaterThanOrEqual(kib, 1024)
        // Extending a file with data keeps the data; KEEP_SIZE keeps the size.
        makeRandomFile(plain + "/data", size: 5000)
        sh("cp \(plain)/data \(mnt)/data && fallocate -l 20000 \(mnt)/data")
        XCTAssertEqual(sh("stat -c %s \(mnt)/data"), "20000\n")
        sh("cmp -n 5000 \(mnt)/data \(plain)/data && tail -c 15000 \(mnt)/data | cmp -n 15000 - /dev/zero")
        sh("fallocate -n -o 0 -l 1M \(mnt)/data")
        XCTAssertEqual(sh("stat -c %s \(mnt)/data"), "20000\n")
        // Punching a hole (and zero-range, collapse) is refused; the content stays.
        let punch = shFails("fallocate -p -o 0 -l 4096 \(mnt)/data")
        XCTAssertTrue(punch.stderr.contains("fallocate failed"), "\(punch)")
        shFails("fallocate -z -o 0 -l 4096 \(mnt)/data")
        shFails("fallocate -c -o 0 -l 4096 \(mnt)/data")
        sh("cmp -n 5000 \(mnt)/data \(plain)/data")
        XCTAssertEqual(sh("stat -c %s \(mnt)/data"), "20000\n")
        try fx.remount()
        sh("cmp -n 5000 \(mnt)/data \(plain)/data && tail -c 15000 \(mnt)/data | cmp -n 15000 - /dev/zero")
        XCTAssertEqual(sh("stat -c %s \(mnt)/data \(mnt)/reserved"), "20000\n1048576\n")
    }
}
