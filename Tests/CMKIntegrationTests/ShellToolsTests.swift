import Foundation
import XCTest

/// Everyday shell tools on the mount, checked against the same commands on a plain directory,
/// then read back byte for byte after a remount.
class ShellToolsTests: IntegrationTestCase {
    /// The same script on a plain directory and on the mount must give identical trees.
    func testShellToolsMatchPlainDirectoryAndSurviveRemount() throws {
        let src = plain + "/src"
        sh("mkdir -p \(src)")
        // Sizes around the 4 KiB block edges, plus multi-block files with a partial last block.
        let sizes = [0, 1, 100, 4095, 4096, 4097, 8192, 12_345, 65_536, 300_001, 1_048_576 + 123]
        for (i, size) in sizes.enumerated() { makeRandomFile("\(src)/f\(i)", size: size) }

        let script = """
        set -eu
        SRC=\(src)
        cd "$1"
        mkdir -p a/b/c d/e/f empty
        cp "$SRC"/f* a/
        cp -r "$SRC" a/b/c/srccopy
        cp -p "$SRC/f5" a/b/preserved
        dd if="$SRC/f10" of=dd-part bs=1000 skip=3 count=77 status=none
        dd if="$SRC/f9" of=a/f10 bs=4096 seek=5 conv=notrunc status=none
        dd if=/dev/zero of=a/f8 bs=1 seek=7000 count=33 conv=notrunc status=none
        dd if="$SRC/f3" of=d/odd bs=7 count=100 status=none
        mv a/f1 d/f1-moved
        mv a/b/c/srccopy d/e/moved-dir
        mv d/e/moved-dir/f2 d/e/moved-dir/f2-renamed
        ln -s ../d/f1-moved a/symlink
        ln -s dangling-target a/dangling
        ln -s /etc/hostname a/absolute-symlink
        tar cf d/archive.tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C a .
        mkdir x
        tar xf d/archive.tar -C x
        mkdir d/ex
        tar cf - -C d/e . | tar xf - -C d/ex
        # Hard links after the archives (tar right after ln: NamespaceTests).
        ln d/f1-moved d/hard-link
        ln a/f9 a/b/f9-hard
        cat a/f3 a/f4 a/f7 > cat-out
        echo appended line >> cat-out
        cat "$SRC/f6" >> cat-out
        rm a/f2
        rm -r d/ex/moved-dir/f4
        mkdir -p gone/one/two
        rmdir gone/one/two gone/one gone
        mkdir -p keep/one/two
        rmdir keep/one/two
        touch empty-file
        printf 'short text\\n' > short
        """
        let ref = plain + "/ref", tree = mnt + "/tree"
        sh("mkdir -p \(ref) \(tree)")
        let scriptPath = fx.logs + "/tools.sh"
        try script.write(toFile: scriptPath, atomically: true, encoding: .utf8)
        sh("sh \(scriptPath) \(ref)")
        sh("sh \(scriptPath) \(tree)")
        // No wait for the kernel's 1 s attribute cache: every name of a hard-linked file shows
        // its new link count at once (NamespaceTests.testHardLinkNamesSeeEachOthersChangesImmediately).

        let expected = manifest(ref)
        XCTAssertTrue(expected.contains("l ./a/symlink -> ../d/f1-moved"), expected)
        XCTAssertTrue(expected.contains(" 2 ./d/hard-link"), "the hard link should show 2 links: \(expected)")
        XCTAssertEqual(manifest(tree), expected, "the mount differs from the plain directory")
        // Symlinks resolve through the mount; cat through a symlink reads the target's content.
        XCTAssertEqual(sha256(tree + "/a/symlink"), sha256(src + "/f1"))
        XCTAssertEqual(sh("readlink \(tree)/a/dangling"), "dangling-target\n")

        try fx.remount()
        XCTAssertEqual(manifest(tree), expected, "the tree read back after a remount differs")
        // cp -p kept the modification time through the mount.
        XCTAssertEqual(sh("stat -c %Y \(tree)/a/b/preserved"), sh("stat -c %Y \(src)/f5"))
        // The backing tree holds ciphertext, not the plaintext.
        let backingF3 = try fx.backing("tree/a/f3"), backingTree = try fx.backing("tree")
        XCTAssertNotEqual(sha256(backingF3), sha256(src + "/f3"))
        XCTAssertEqual(sh("stat -c %s \(backingF3)"), "\(24 + 4095 + 28)\n")
        sh("rm -rf \(tree)/x \(tree)/d")
        XCTAssertEqual(sh("ls \(tree)"), "a\ncat-out\ndd-part\nempty\nempty-file\nkeep\nshort\n")
        sh("test -d \(backingTree) && rm -rf \(tree) && test ! -e \(backingTree)")
    }
}
