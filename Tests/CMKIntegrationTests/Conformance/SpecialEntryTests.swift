import Foundation
import XCTest

/// What the conformance reports cannot see: how device nodes and long symlink targets are kept
/// in the backing store, and a backing file whose size and ciphertext disagree.
class SpecialEntryTests: IntegrationTestCase {
    /// A device node is a real node in the backing store (type, numbers, owner and mode), but the
    /// mount is nodev: opening it through the mount never reaches a device.
    func testDeviceNodesAreKeptButNeverOpenedThroughTheMount() throws {
        sh("mknod -m 666 \(mnt)/null c 1 3 && mknod -m 600 \(mnt)/loop b 7 0")
        XCTAssertEqual(sh("stat -c '%F %t,%T %a %U' \(mnt)/null \(mnt)/loop"),
                       "character special file 1,3 666 root\nblock special file 7,0 600 root\n")
        let opened = fx.sh("head -c 1 \(mnt)/null")
        XCTAssertNotEqual(opened.status, 0, "a device node must not open through a nodev mount: \(opened)")
        XCTAssertTrue(opened.stderr.contains("Permission denied"), "\(opened)")
        let backing = try fx.backing("null")
        XCTAssertEqual(sh("stat -c '%F %t,%T %a' \(Shell.quote(backing))"), "character special file 1,3 666\n")
        XCTAssertTrue(FixtureMounts.options(of: mnt).contains("nodev"), FixtureMounts.options(of: mnt))
        try fx.remount()
        XCTAssertEqual(sh("stat -c '%F %t,%T %a' \(mnt)/null"), "character special file 1,3 666\n")
    }

    /// Long targets live in meta.db like long names; removing the last link (by unlink or by a
    /// rename over it) removes the row, and a hard link keeps it.
    func testLongSymlinkTargetsAreStoredAndRemovedWithTheirLastLink() throws {
        let target = String(repeating: "d/", count: 1500) + "end"   // 3,003 bytes
        sh("ln -s \(target) \(mnt)/a && ln -s \(target) \(mnt)/b && ln \(mnt)/a \(mnt)/a2 && touch \(mnt)/victim")
        XCTAssertEqual(sh("readlink \(mnt)/a2"), target + "\n")
        // The backing symlink holds the short long-form reference, not the 4 KiB encoding.
        let stored = try FileManager.default.destinationOfSymbolicLink(atPath: try fx.backing("a"))
        XCTAssertTrue(stored.hasPrefix("L.") && stored.count == 45, stored)
        func rows() -> Int {
            Int(sh("sqlite3 \(vol)/meta.db 'SELECT count(*) FROM long_names'").trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
        }
        XCTAssertEqual(rows(), 2, "one row per long target (a and a2 are one inode)")
        sh("rm \(mnt)/a")
        XCTAssertEqual(rows(), 2, "a2 still links the target")
        XCTAssertEqual(sh("readlink \(mnt)/a2"), target + "\n")
        sh("rm \(mnt)/a2")
        XCTAssertEqual(rows(), 1)
        sh("mv \(mnt)/victim \(mnt)/b")
        XCTAssertEqual(rows(), 0, "a rename over the last link drops its row")
    }

    /// A backing file cut inside its last block's nonce or tag: reads that reach the cut fail
    /// with EIO, are logged and audited; the blocks before it still read.
    func testFileCutInsideItsLastBlockReadsAsEIO() throws {
        makeRandomFile(plain + "/src", size: 5000)
        sh("cp \(plain)/src \(mnt)/f && cp \(plain)/src \(mnt)/g")
        try fx.unmount()
        let backing = try fx.backing("f")
        let size = try XCTUnwrap(FileManager.default.attributesOfItem(atPath: backing)[.size] as? Int)
        XCTAssertEqual(size, 24 + (4096 + 28) + (904 + 28))
        for cut in [size - 10, size - 904 - 20] {
            XCTAssertEqual(truncate(backing, off_t(cut)), 0)
            try fx.mount()
            let whole = fx.sh("cat \(mnt)/f > /dev/null")
            XCTAssertNotEqual(whole.status, 0, "cut to \(cut): the file must not read as a shorter one")
            XCTAssertTrue(whole.stderr.contains("Input/output error"), "\(whole)")
            let first = fx.sh("dd if=\(mnt)/f of=\(plain)/first bs=4096 count=1 status=none && cmp -n 4096 \(plain)/first \(plain)/src && echo same")
            XCTAssertEqual(first.stdout, "same\n", "the first block still reads: \(first)")
            XCTAssertTrue(fx.sh("echo x >> \(mnt)/f").status != 0, "no write lands after a torn block")
            XCTAssertEqual(sha256(mnt + "/g"), sha256(plain + "/src"), "another file is unaffected")
            try fx.unmount()
        }
        XCTAssertTrue(fx.mountLog().contains("backing file is shorter than its size says"), fx.mountLog())
        let denied = fx.cmkfs(["audit", "show", vol, "--event", "read-denied", "--json"])
        XCTAssertTrue(denied.succeeded, "\(denied)")
        XCTAssertTrue(denied.stdout.contains("\"/f\"") && denied.stdout.contains("shorter than its size says"), denied.stdout)
        try fx.mount()
    }

    /// Names that are not UTF-8 are refused with EILSEQ: they used to be decoded with
    /// replacement characters, so b'\\xff' and b'\\xfe' were one backing entry and writing one
    /// overwrote the other.
    func testNamesThatAreNotUTF8AreRefusedAndNeverCollide() {
        let program = """
        import errno, os, sys
        d = sys.argv[1].encode()
        def err(call):
            try:
                call(); return 'ok'
            except OSError as e:
                return errno.errorcode[e.errno]
        def write(name, data):
            with open(d + b'/' + name, 'wb') as f: f.write(data)
        print('create ff', err(lambda: write(b'\\xff', b'ff')))
        print('create fe', err(lambda: write(b'\\xfe', b'fe')))
        print('mkdir', err(lambda: os.mkdir(d + b'/dir-\\xe9')))
        print('symlink target', err(lambda: os.symlink(b'to-\\xe9', d + b'/link')))
        write(b'ok', b'x')
        print('rename to', err(lambda: os.rename(d + b'/ok', d + b'/\\xe9')))
        print(sorted(os.listdir(d)))
        """
        XCTAssertEqual(py(program, [mnt]), """
            create ff EILSEQ
            create fe EILSEQ
            mkdir EILSEQ
            symlink target EILSEQ
            rename to EILSEQ
            [b'ok']

            """)
    }
}

/// Mount options from /proc/self/mounts.
enum FixtureMounts {
    static func options(of mountpoint: String) -> String {
        let text = (try? String(contentsOfFile: "/proc/self/mounts", encoding: .utf8)) ?? ""
        return text.split(separator: "\n").map { $0.split(separator: " ") }
            .first { $0.count > 3 && String($0[1]) == mountpoint }.map { String($0[3]) } ?? ""
    }
}
