import Foundation
import XCTest

/// Changes made to the ciphertext behind the mount's back: every tampered block reads as EIO,
/// while the other blocks of the same file and other files stay readable.
final class TamperTests: IntegrationTestCase {
    static let block = 4096
    static let diskBlock = 4096 + 28
    static let header = 24

    /// Offset in the backing file of plaintext block `index`.
    func diskOffset(_ index: Int) -> Int { Self.header + index * Self.diskBlock }

    /// Reads plaintext block `index` of `path` through the mount with dd.
    func readBlock(_ path: String, _ index: Int) -> ShellResult {
        fx.sh("dd if=\(path) bs=4096 skip=\(index) count=1 status=none | sha256sum")
    }

    /// The sha256 of block `index` of a plain file.
    func plainBlockSHA(_ path: String, _ index: Int) -> String {
        sh("dd if=\(path) bs=4096 skip=\(index) count=1 status=none | sha256sum")
    }

    func assertEIO(_ r: ShellResult, _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertFalse(r.timedOut, "\(what): \(r)", file: file, line: line)
        // dd's own exit status is lost in the pipe; its message is what tells.
        XCTAssertTrue(r.stderr.contains("Input/output error"), "\(what) should fail with EIO: \(r)", file: file, line: line)
    }

    func testFlippedByteFailsOnlyThatBlock() throws {
        let src = plain + "/victim", other = plain + "/other"
        makeRandomFile(src, size: 5 * Self.block + 1000)
        makeRandomFile(other, size: 3 * Self.block)
        sh("cp \(src) \(mnt)/victim && cp \(other) \(mnt)/other")
        try fx.unmount()
        // Flip one bit in the ciphertext (not nonce, not tag) of block 2.
        let at = diskOffset(2) + 12 + 1000
        XCTAssertEqual(py("""
            import sys
            p, at = sys.argv[1], int(sys.argv[2])
            with open(p, 'r+b') as f:
                f.seek(at); b = f.read(1); f.seek(at); f.write(bytes([b[0] ^ 0x01]))
            print('flipped')
            """, [try fx.backing("victim"), String(at)]), "flipped\n")
        try fx.mount()
        let bad = readBlock(mnt + "/victim", 2)
        assertEIO(bad, "the flipped block")
        for index in [0, 1, 3, 4, 5] {
            let r = readBlock(mnt + "/victim", index)
            XCTAssertTrue(r.succeeded && r.stderr.isEmpty, "block \(index) should still read: \(r)")
            XCTAssertEqual(r.stdout, plainBlockSHA(src, index), "block \(index) content")
        }
        XCTAssertEqual(sha256(mnt + "/other"), sha256(other), "another file is unaffected")
        // Reading the whole file fails too; so does a read that only touches one byte of the block.
        let whole = fx.sh("cat \(mnt)/victim > /dev/null")
        XCTAssertNotEqual(whole.status, 0)
        XCTAssertTrue(whole.stderr.contains("Input/output error"), "\(whole)")
        assertEIO(fx.sh("dd if=\(mnt)/victim bs=1 skip=\(2 * Self.block + 4095) count=1 status=none | sha256sum"), "one byte of the block")
        // The daemon logged the failure and kept serving.
        XCTAssertTrue(fx.mountLog().contains("block 2 is corrupt"), fx.mountLog())
        XCTAssertEqual(sha256(mnt + "/other"), sha256(other))
    }

    func testSwappedBlocksFailAuthentication() throws {
        let src = plain + "/victim"
        makeRandomFile(src, size: 4 * Self.block)
        sh("cp \(src) \(mnt)/victim")
        try fx.unmount()
        XCTAssertEqual(py("""
            import sys
            p, a, b, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
            with open(p, 'r+b') as f:
                f.seek(a); x = f.read(n); f.seek(b); y = f.read(n)
                assert len(x) == n and len(y) == n and x != y
                f.seek(a); f.write(y); f.seek(b); f.write(x)
            print('swapped')
            """, [try fx.backing("victim"), String(diskOffset(1)), String(diskOffset(2)), String(Self.diskBlock)]), "swapped\n")
        try fx.mount()
        assertEIO(readBlock(mnt + "/victim", 1), "block 1 (now holding block 2's ciphertext)")
        assertEIO(readBlock(mnt + "/victim", 2), "block 2 (now holding block 1's ciphertext)")
        for index in [0, 3] {
            let r = readBlock(mnt + "/victim", index)
            XCTAssertTrue(r.succeeded && r.stderr.isEmpty, "block \(index): \(r)")
            XCTAssertEqual(r.stdout, plainBlockSHA(src, index))
        }
    }

    /// A block copied from another file (same position) fails: the file id is bound into every block.
    func testBlockCopiedFromAnotherFileFails() throws {
        makeRandomFile(plain + "/a", size: 3 * Self.block)
        makeRandomFile(plain + "/b", size: 3 * Self.block)
        sh("cp \(plain)/a \(mnt)/a && cp \(plain)/b \(mnt)/b")
        try fx.unmount()
        sh("dd if=\(try fx.backing("b")) of=\(try fx.backing("a")) bs=1 skip=\(diskOffset(1)) seek=\(diskOffset(1)) count=\(Self.diskBlock) conv=notrunc status=none")
        try fx.mount()
        assertEIO(readBlock(mnt + "/a", 1), "a block moved between files")
        XCTAssertEqual(readBlock(mnt + "/a", 0).stdout, plainBlockSHA(plain + "/a", 0))
        XCTAssertEqual(readBlock(mnt + "/a", 2).stdout, plainBlockSHA(plain + "/a", 2))
        XCTAssertEqual(sha256(mnt + "/b"), sha256(plain + "/b"))
    }
}
