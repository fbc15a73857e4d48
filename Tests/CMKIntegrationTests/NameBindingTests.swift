import Foundation
import XCTest

/// Backing files moved between names behind the mount's back (issue 17, item 13): each file is
/// bound to its directory entries, so a swapped or copied file reads as EIO, while everything
/// the mount itself does to names (rename, exchange, link, unlink) keeps files readable.
final class NameBindingTests: IntegrationTestCase {
    func testSwappedAndCopiedBackingFilesReadAsEIO() throws {
        sh("mkdir \(mnt)/d && printf alpha > \(mnt)/a && printf bravo > \(mnt)/b && printf charlie > \(mnt)/d/c")
        try fx.unmount()
        let a = try fx.backing("a"), b = try fx.backing("b"), c = try fx.backing("d/c")
        // Swap a and b; put a copy of c where d/c2 would be... and copy a over c's name.
        sh("mv \(Shell.quote(a)) \(Shell.quote(a)).tmp && mv \(Shell.quote(b)) \(Shell.quote(a)) && mv \(Shell.quote(a)).tmp \(Shell.quote(b))")
        let moved = try fx.backing("moved")
        sh("cp -p \(Shell.quote(c)) \(Shell.quote(moved))")
        try fx.mount()
        for name in ["a", "b", "moved"] {
            let r = fx.sh("cat \(mnt)/\(name)")
            XCTAssertNotEqual(r.status, 0, "\(name) must not read as another file's content: \(r)")
            XCTAssertTrue(r.stderr.contains("Input/output error"), "\(name): \(r)")
        }
        XCTAssertEqual(sh("cat \(mnt)/d/c"), "charlie", "the original entry still reads")
        XCTAssertTrue(fx.mountLog().contains("is not bound to the name it was opened by"), fx.mountLog())
        let denied = fx.cmkfs(["audit", "show", vol, "--event", "open", "--json"]).stdout
        XCTAssertTrue(denied.contains("not bound to this name"), denied)
    }

    func testRenamesExchangesLinksAndUnlinksKeepFilesReadable() throws {
        sh("""
           mkdir \(mnt)/d \(mnt)/e && printf one > \(mnt)/d/1 && printf two > \(mnt)/d/2 && printf three > \(mnt)/3
           mv \(mnt)/d/1 \(mnt)/e/1-moved && mv \(mnt)/3 \(mnt)/d/2 && ln \(mnt)/e/1-moved \(mnt)/1-link
           rm \(mnt)/e/1-moved && mv \(mnt)/d \(mnt)/e/d-moved && ln \(mnt)/1-link \(mnt)/e/again
           """)
        XCTAssertEqual(py(NamespaceTests.renameat2, [mnt + "/1-link", mnt + "/e/d-moved/2", "2"]), "ok\n")
        XCTAssertEqual(sh("cat \(mnt)/1-link \(mnt)/e/d-moved/2 \(mnt)/e/again"), "threeoneone")
        try fx.remount()
        XCTAssertEqual(sh("cat \(mnt)/1-link \(mnt)/e/d-moved/2 \(mnt)/e/again"), "threeoneone")
        sh("rm \(mnt)/e/again && cat \(mnt)/e/d-moved/2 >/dev/null")
        try fx.remount()
        XCTAssertEqual(sh("cat \(mnt)/e/d-moved/2"), "one")
    }

    /// The kernel looks the victim of a rename up first: a file that loses one of its names to
    /// a rename must still open through its other name (found by the stress test).
    func testAFileReplacedUnderOneNameStillOpensUnderItsOther() throws {
        sh("mkdir \(mnt)/d0 \(mnt)/d2 && printf x > \(mnt)/d0/A && ln \(mnt)/d0/A \(mnt)/d2/B && mv \(mnt)/d2/B \(mnt)/d2/C && cat \(mnt)/d2/C >/dev/null")
        sh("printf y > \(mnt)/d0/D && mv \(mnt)/d0/D \(mnt)/d0/A")
        XCTAssertEqual(sh("cat \(mnt)/d2/C \(mnt)/d0/A"), "xy")
        sh("ln \(mnt)/d2/C \(mnt)/d2/E && cat \(mnt)/d2/E >/dev/null && rm \(mnt)/d2/E")
        XCTAssertEqual(sh("cat \(mnt)/d2/C"), "x")
    }
}
