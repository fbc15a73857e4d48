import Foundation
import XCTest

/// The claims of docs/threat-model.md about someone who can change the backing store, each shown
/// for real: what is detected (EIO) and the known limits of format 1 (accepted silently). A limit
/// test that starts failing means the format got stronger: update the threat model.
final class ThreatModelTests: IntegrationTestCase {
    static let diskBlock = 4096 + 28, header = 24

    /// The backing path of `name` (names are encrypted; the last component need not exist).
    func backing(_ name: String) -> String {
        do { return try fx.backing(name) } catch { XCTFail("\(error)"); return "/nonexistent" }
    }

    /// Copies `count` bytes at `from` of file `src` over `dst` at `to` (behind the mount's back).
    func splice(_ src: String, _ from: Int, _ dst: String, _ to: Int, _ count: Int) {
        py("""
            import sys
            src, a, dst, b, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
            data = open(src, 'rb').read()[a:a + n]
            with open(dst, 'r+b') as f: f.seek(b); f.write(data)
            """, [src, String(from), dst, String(to), String(count)])
    }

    func testEDEKRowCopiedFromAnotherFileIsDetected() throws {
        sh("echo secret-one > \(mnt)/one && echo secret-two > \(mnt)/two")
        try fx.unmount()
        let id = { (n: String) in self.py("import sys; print(open(sys.argv[1],'rb').read(24)[8:24].hex())", [self.backing(n)]).trimmingCharacters(in: .whitespacesAndNewlines) }
        sh("sqlite3 \(vol)/meta.db \"UPDATE file_attrs SET value = (SELECT value FROM file_attrs WHERE file_id = x'\(id("one"))' AND name = 'cmkfs.edek') WHERE file_id = x'\(id("two"))' AND name = 'cmkfs.edek'\"")
        try fx.mount()
        XCTAssertTrue(fx.sh("cat \(mnt)/two").stderr.contains("Input/output error"))
        XCTAssertEqual(sh("cat \(mnt)/one"), "secret-one\n")
    }

    func testHeaderFileIDChangedIsDetected() throws {
        sh("echo secret-one > \(mnt)/one && echo secret-two > \(mnt)/two")
        try fx.unmount()
        // Give "two" the header (file id) of "one": the key row then belongs to "one", whose DEK
        // does not open "two"'s blocks (their AAD names the other file id).
        splice(backing("one"), 0, backing("two"), 0, Self.header)
        try fx.mount()
        XCTAssertTrue(fx.sh("cat \(mnt)/two").stderr.contains("Input/output error"))
    }

    /// Known limit: a block replaced by an older version of itself (same file, same position,
    /// same DEK) is accepted.
    func testLimitBlockRollbackIsAccepted() throws {
        py("import sys; open(sys.argv[1], 'w').write('A' * 8192)", [mnt + "/f"])
        try fx.unmount()
        sh("cp \(backing("f")) \(fx.root)/old-f")
        try fx.mount()
        py("import sys; open(sys.argv[1], 'w').write('B' * 8192)", [mnt + "/f"])
        try fx.unmount()
        splice(fx.root + "/old-f", Self.header, backing("f"), Self.header, Self.diskBlock)
        try fx.mount()
        XCTAssertEqual(sh("head -c 1 \(mnt)/f; tail -c 1 \(mnt)/f"), "AB", "block 0 rolled back to the old version")
    }

    /// Known limit: cutting whole trailing blocks gives a shorter file, not an error.
    func testLimitTruncationAtABlockBoundaryIsAccepted() throws {
        sh("head -c 12288 /dev/urandom > \(mnt)/f")
        try fx.unmount()
        sh("truncate -s \(Self.header + Self.diskBlock) \(backing("f"))")
        try fx.mount()
        XCTAssertEqual(sh("stat -c %s \(mnt)/f"), "4096\n")
        XCTAssertTrue(fx.sh("cat \(mnt)/f > /dev/null").succeeded)
    }

    /// No longer a limit (name bindings): whole backing files swapped (header and all) read as
    /// EIO instead of as each other; an older copy of a file under its own name is still
    /// accepted (the rollback limit above).
    func testWholeFileSwapIsDetectedButAnOlderCopyUnderItsOwnNameIsNot() throws {
        sh("echo content-of-a > \(mnt)/a && echo content-of-b > \(mnt)/b")
        try fx.unmount()
        sh("cp -p \(backing("a")) \(fx.root)/old-a")
        sh("mv \(backing("a")) \(fx.root)/t && mv \(backing("b")) \(backing("a")) && mv \(fx.root)/t \(backing("b"))")
        try fx.mount()
        XCTAssertTrue(fx.sh("cat \(mnt)/a").stderr.contains("Input/output error"))
        XCTAssertTrue(fx.sh("cat \(mnt)/b").stderr.contains("Input/output error"))
        try fx.unmount()
        sh("mv \(backing("a")) \(fx.root)/t && mv \(backing("b")) \(backing("a")) && mv \(fx.root)/t \(backing("b"))")
        try fx.mount()
        sh("echo newer >> \(mnt)/a")
        try fx.unmount()
        sh("cp -p \(fx.root)/old-a \(backing("a"))")
        try fx.mount()
        XCTAssertEqual(sh("cat \(mnt)/a"), "content-of-a\n", "the rollback of a file under its own name is accepted")
    }

    /// Deleting a backing file removes the file from the mount; fsck reports its orphan rows.
    func testDeletionIsVisibleToFsckOnly() throws {
        sh("echo x > \(mnt)/gone && echo y > \(mnt)/kept")
        try fx.unmount()
        sh("rm \(backing("gone"))")
        try fx.mount()
        XCTAssertFalse(fx.sh("test -e \(mnt)/gone").succeeded)
        try fx.unmount()
        let r = fx.cmkfs(["fsck", vol, "--kms-dir", fx.kms, "--json"])
        XCTAssertEqual(r.status, 15)
        XCTAssertTrue(r.stdout.contains("orphan-rows"), r.stdout)
    }
}
