import Foundation
import XCTest

/// The backing names the mount keeps after a listing or a lookup (`RecentNames`), so an `rm -r`
/// unlinks what it listed without encrypting each name again: each entry belongs to its
/// directory, whatever is renamed, linked, removed and made again; and the kept names go with
/// the name key, which stops name operations as before.
final class RecentNamesTests: IntegrationTestCase {
    private func recentNames() -> Double? {
        let r = fx.cmkfs(["metrics", vol])
        XCTAssertTrue(r.succeeded, "\(r)")
        return r.stdout.split(separator: "\n").first { $0.hasPrefix("cmkfs_recent_names ") }
            .flatMap { Double($0.dropFirst("cmkfs_recent_names ".count)) }
    }

    /// Equal names in two listed directories are two entries: removing one removes that
    /// directory's entry only. Renames, a hard link (one inode, names in both directories), and
    /// a name removed and made again, all after the listings, change nothing of that.
    func testAListedNameIsRemovedInItsOwnDirectory() throws {
        sh("mkdir \(mnt)/a \(mnt)/b && for d in a b; do for f in x y z; do echo $d$f > \(mnt)/$d/$f; done; done")
        sh("ln \(mnt)/b/z \(mnt)/a/link")
        sh("ls -l \(mnt)/a \(mnt)/b > /dev/null")
        XCTAssertGreaterThan(try XCTUnwrap(recentNames()), 0, "the listings kept their names")

        sh("rm \(mnt)/a/x")
        XCTAssertEqual(sh("ls \(mnt)/a; cat \(mnt)/b/x"), "link\ny\nz\nbx\n")
        // Moved within and across directories, then the old names made again and removed.
        sh("mv \(mnt)/a/y \(mnt)/a/w && mv \(mnt)/b/y \(mnt)/a/y && echo new > \(mnt)/b/y")
        XCTAssertEqual(sh("cat \(mnt)/a/w \(mnt)/a/y \(mnt)/b/y"), "ay\nby\nnew\n")
        sh("rm \(mnt)/b/y \(mnt)/a/y")
        XCTAssertEqual(sh("ls \(mnt)/a; ls \(mnt)/b; cat \(mnt)/a/w"), "link\nw\nz\nx\nz\nay\n")
        // One inode, two names: removing the listed name in `a` leaves `b`'s.
        sh("rm \(mnt)/a/link")
        XCTAssertEqual(sh("cat \(mnt)/b/z; stat -c %h \(mnt)/b/z"), "bz\n1\n")
        // A directory removed and made again under its name is another directory (another id).
        sh("rm -r \(mnt)/b && mkdir \(mnt)/b && echo again > \(mnt)/b/x && ls \(mnt)/b > /dev/null && rm \(mnt)/b/x")
        XCTAssertEqual(sh("ls -A \(mnt)/b; ls \(mnt)/a"), "w\nz\n")
        sh("rm -r \(mnt)/a \(mnt)/b")
        XCTAssertEqual(sh("ls -A \(mnt)"), "")
        XCTAssertEqual(try fx.fileCount(), 0, "every removed file's key rows went")
    }

    /// Names are bytes: "café" precomposed (NFC) and decomposed (NFD), which Swift's `String`
    /// calls equal, are two files, created, listed, read and removed each on its own.
    func testNamesThatDifferOnlyInUnicodeNormalizationAreTwoFiles() throws {
        let out = py("""
            import os, sys
            d = sys.argv[1]; nfc = os.path.join(d, "caf\\u00e9"); nfd = os.path.join(d, "cafe\\u0301")
            open(nfc, "w").write("nfc"); os.listdir(d); open(nfd, "w").write("nfd")
            print(sorted(n.encode().hex() for n in os.listdir(d)), open(nfc).read(), open(nfd).read())
            os.unlink(nfd)
            print(sorted(n.encode().hex() for n in os.listdir(d)), open(nfc).read())
            os.rename(nfc, nfd); open(nfc, "w").write("again")
            print(sorted(n.encode().hex() for n in os.listdir(d)), open(nfc).read(), open(nfd).read())
            """, [mnt])
        let nfc = Array("caf\u{e9}".utf8).map { String(format: "%02x", $0) }.joined()
        let nfd = Array("cafe\u{301}".utf8).map { String(format: "%02x", $0) }.joined()
        let both = "['\([nfc, nfd].sorted()[0])', '\([nfc, nfd].sorted()[1])']"
        XCTAssertEqual(out, "\(both) nfc nfd\n['\(nfc)'] nfc\n\(both) again nfc\n")
    }

    /// A revoked name key stops an unlink of a listed name (EACCES, the file stays), and the
    /// kept names go with the name key; after `key enable` the same unlink works.
    func testKeptNamesGoWithTheNameKeyAndDoNotOutliveItsRevocation() throws {
        sh("mkdir \(mnt)/d && for f in one two; do echo $f > \(mnt)/d/$f; done && ls \(mnt)/d > /dev/null")
        XCTAssertGreaterThan(try XCTUnwrap(recentNames()), 0, "the listing kept its names")
        let backing = try fx.backing("d/one")

        XCTAssertTrue(fx.cmkfs(["cache", "flush", vol]).succeeded)
        XCTAssertTrue(waitUntil(deadline: 20) { self.recentNames() == 0 }, "a flush takes the name key and the kept names")
        sh("ls \(mnt)/d > /dev/null")
        XCTAssertGreaterThan(try XCTUnwrap(recentNames()), 0, "a listing after the flush keeps names again")

        let revoke = fx.cmkfs(["key", "revoke", vol, "--kms-dir", fx.kms])
        XCTAssertTrue(revoke.succeeded, "\(revoke)")
        XCTAssertTrue(waitUntil(deadline: 20) { self.recentNames() == 0 }, "the revocation takes the kept names")
        let refused = shFails("rm \(mnt)/d/one")
        XCTAssertTrue(refused.stderr.contains("Permission denied"), "\(refused)")
        XCTAssertTrue(FileManager.default.fileExists(atPath: backing), "the refused unlink left the file")
        XCTAssertEqual(recentNames(), 0, "nothing is kept while the name key is revoked")

        XCTAssertTrue(fx.cmkfs(["key", "enable", vol, "--kms-dir", fx.kms]).succeeded)
        sh("rm \(mnt)/d/one")
        XCTAssertFalse(FileManager.default.fileExists(atPath: backing))
        XCTAssertEqual(sh("ls \(mnt)/d"), "two\n")
    }
}
