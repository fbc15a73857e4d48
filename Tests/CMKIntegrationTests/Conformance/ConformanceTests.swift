import Foundation
import XCTest

/// POSIX conformance against ext4: `scripts/conformance.py` prints what an application can
/// observe (modes, owners, link counts, types, device numbers, sizes, errno names, which times
/// moved) after each step of a section, once in a directory on the host's ext4 (the reference)
/// and once in the mount, as root and, where permissions matter, as `nobody`. The two reports
/// must be identical. A few lines are also checked against their expected text, so a reference
/// filesystem that behaved oddly could not hide a fault.
class ConformanceTests: IntegrationTestCase {
    static let script: String = {
        // Tests/CMKIntegrationTests/Conformance/ConformanceTests.swift → the package root.
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<4 { url.deleteLastPathComponent() }
        return url.path + "/scripts/conformance.py"
    }()

    /// Runs one section in the reference directory and in the mount; asserts the reports are
    /// equal and returns the mount's.
    @discardableResult
    func compare(_ section: String, timeout: TimeInterval = 300, file: StaticString = #filePath, line: UInt = #line) -> String {
        let reference = fx.root + "/ref-" + section, mounted = mnt + "/conf-" + section
        sh("mkdir -p \(reference) \(mounted)", file: file, line: line)
        let want = python(try! String(contentsOfFile: Self.script, encoding: .utf8), [reference, "--section", section], timeout: timeout)
        let got = python(try! String(contentsOfFile: Self.script, encoding: .utf8), [mounted, "--section", section], timeout: timeout)
        XCTAssertTrue(want.succeeded, "reference run: \(want)", file: file, line: line)
        XCTAssertTrue(got.succeeded, "mount run: \(got)", file: file, line: line)
        let a = want.stdout.split(separator: "\n", omittingEmptySubsequences: false)
        let b = got.stdout.split(separator: "\n", omittingEmptySubsequences: false)
        var differences = 0
        for i in 0..<max(a.count, b.count) where (i < a.count ? a[i] : "<missing>") != (i < b.count ? b[i] : "<missing>") {
            differences += 1
            if differences <= 20 {
                XCTFail("line \(i + 1) differs\n  ext4:  \(i < a.count ? a[i] : "<missing>")\n  cmkfs: \(i < b.count ? b[i] : "<missing>")",
                        file: file, line: line)
            }
        }
        XCTAssertEqual(differences, 0, "\(section): \(differences) of \(a.count) lines differ from ext4", file: file, line: line)
        XCTAssertFalse(got.stdout.contains("crashed"), got.stdout, file: file, line: line)
        print("[cmkfs-it] conformance \(section): \(b.count - 1) lines, \(differences) differ from ext4")
        return got.stdout
    }

    func assertLine(_ report: String, _ expected: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertTrue(report.split(separator: "\n").contains(Substring(expected)), "missing line: \(expected)", file: file, line: line)
    }

    func testModesFollowTheCallersUmaskWithSetIDBits() {
        let r = compare("modes")
        assertLine(r, "modes umask=000 file 0777: ok file 0777 0:0 n=1 size=0")
        assertLine(r, "modes umask=000 file 0620: ok file 0620 0:0 n=1 size=0")
        assertLine(r, "modes umask=000 file 4755: ok file 4755 0:0 n=1 size=0")
        assertLine(r, "modes umask=000 dir 0777: ok dir 0777 0:0 n=2")
        assertLine(r, "modes umask=027 dir 0777: ok dir 0750 0:0 n=2")
    }

    func testSetGroupIDDirectoriesGiveTheirGroup() {
        let r = compare("setgid_directories")
        assertLine(r, "setgid root creates dir: ok dir 2775 0:4242 n=2")
        assertLine(r, "  [nobody] setgid nobody creates file: ok file 0775 65534:4242 n=1 size=0")
    }

    func testASecondUserOwnsWhatItMakesAndMayNotMakeDevices() {
        let r = compare("second_user")
        assertLine(r, "  [nobody] user mknod chr: EPERM ENOENT")
        assertLine(r, "  [nobody] user umask=000 file 4755: ok file 4755 65534:65534 n=1 size=0")
    }

    func testTimesMoveAsOnExt4() {
        let r = compare("times")
        assertLine(r, "times write: ok f=mtime,ctime ta=none")
    }

    func testRenameOverEveryKindOfTarget() {
        let r = compare("rename")
        assertLine(r, "rename dir -> dir (rename): ok | src: ENOENT | dst: dir 0755 0:0 n=2 | dst/inside: ENOENT")
        assertLine(r, "rename dir -> full (rename): ENOTEMPTY | src: dir 0755 0:0 n=2 | dst: dir 0755 0:0 n=2 | dst/inside: file 0644 0:0 n=1 size=1")
        assertLine(r, "rename dir onto emptied dir: ok ENOENT dir 0755 0:0 n=2 kept")
    }

    func testHardLinksToEveryKindOfEntry() {
        let r = compare("links")
        assertLine(r, "link chr: ok chr 0640 0:0 n=2 rdev=1,3 | twin: chr 0640 0:0 n=2 rdev=1,3 | same inode: True")
    }

    func testDeviceNodes() {
        let r = compare("devices")
        assertLine(r, "mknod blk 259,1048575: ok blk 0660 0:0 n=1 rdev=259,1048575")
    }

    func testSymlinksOfEveryLengthUpTo4095Bytes() throws {
        let r = compare("symlinks", timeout: 600)
        assertLine(r, "symlink lengths 1..4095 wrong: 0 []")
        assertLine(r, "symlink 4096: ENAMETOOLONG")
        // The long ones survive a remount, and fsck finds every stored target in use.
        try fx.remount()
        XCTAssertEqual(sh("readlink \(mnt)/conf-symlinks/symlinks/links/s4095-linked | tr -d '\\n' | wc -c").trimmingCharacters(in: .whitespacesAndNewlines), "4095")
        try fx.unmount()
        let fsck = fx.cmkfs(["fsck", vol, "--kms-dir", fx.kms])
        XCTAssertEqual(fsck.status, 0, "\(fsck)")
        XCTAssertFalse(fsck.stdout.contains("orphan-long-name"), "\(fsck)")
        try fx.mount()
    }

    func testOpenFlagsAndFileIO() {
        let r = compare("files")
        assertLine(r, "O_APPEND with pwrite: b'onetwo'")
        assertLine(r, "unlinked but open: 0 b'after unlink'")
    }

    func testFIFOsAndSocketsWork() {
        compare("special_files")
    }
}
