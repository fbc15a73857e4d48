import Foundation
import XCTest

/// readdirplus (FileSystem.readdirplus): a listing looks every entry up, so the attributes it
/// gives must be the ones `stat` gives, over listings long enough to take several replies (an
/// entry that does not fit gives its lookup back), and the lookup counts must stay right when
/// the kernel forgets them all.
final class ReaddirPlusTests: IntegrationTestCase {
    func testLongListingsMatchStatAndSurviveTheKernelForgettingThem() throws {
        // 400 entries with 200-byte names: far more than one 4 KiB reply holds.
        sh("""
        set -eu
        cd \(mnt) && mkdir big && cd big
        for i in $(seq 1 400); do
          n=$(printf 'entry-%03d-%0190d' $i 0)
          head -c $((i * 7)) /dev/urandom > "$n"
        done
        mkdir sub-dir && ln -s entry-001-$(printf '%0190d' 0) a-symlink
        ln "entry-002-$(printf '%0190d' 0)" a-hard-link
        """)
        let expected = sh("cd \(mnt)/big && stat -c '%n %i %s %h %F' -- * | sort")
        XCTAssertEqual(expected.split(separator: "\n").count, 403)
        for round in 0..<3 {
            // Every dentry and inode the kernel holds goes (FORGET for each), then the listing
            // looks them all up again.
            sh("sync; echo 2 > /proc/sys/vm/drop_caches")
            let listed = sh("cd \(mnt)/big && ls -1 -f | grep -v '^\\.\\.\\?$' | sort | xargs -d '\\n' stat -c '%n %i %s %h %F' -- | sort")
            XCTAssertEqual(listed, expected, "round \(round)")
            let long = sh("ls -li \(mnt)/big | tail -n +2 | wc -l")
            XCTAssertEqual(long.trimmingCharacters(in: .whitespacesAndNewlines), "403", "round \(round)")
        }
        sh("rm -r \(mnt)/big")
        XCTAssertFalse(FileManager.default.fileExists(atPath: mnt + "/big"))
    }

    /// Lookups and readdirplus entries take each entry by name (its attributes and file handle),
    /// without opening it: no `O_PATH` open per entry (strace on the mount), whether the kernel
    /// knows the entry's inode already (a second `ls -l`, an `rm -r` after a read) or not (after
    /// the kernel forgot them all). An entry whose backing file was replaced behind the mount's
    /// back by a copy (a new object, which may reuse the old inode number) is the new object,
    /// not the known one: it reads as itself, not ESTALE.
    func testListingsAndLookupsOpenNoEntry() throws {
        sh("mkdir \(mnt)/k && cd \(mnt)/k && for i in $(seq 1 30); do head -c $((i * 100)) /dev/urandom > f$i; done")
        let expected = sh("cd \(mnt)/k && stat -c '%n %s %h %F' -- * | sort")
        for kernelKnows in [true, false] {
            // Every dentry and inode the kernel holds goes (FORGET for each), or stays.
            if !kernelKnows { sh("sync; echo 2 > /proc/sys/vm/drop_caches") }
            let calls = try syscallsTraced("openat") {
                XCTAssertEqual(sh("ls -l \(mnt)/k | tail -n +2 | wc -l"), "30\n")
                if !kernelKnows { sh("echo 2 > /proc/sys/vm/drop_caches; stat \(mnt)/k/f3 \(mnt)/k/f4 > /dev/null") }
            }
            let pathOpens = calls.filter { $0.contains("O_PATH") }
            XCTAssertLessThan(pathOpens.count, 5, "known \(kernelKnows): listing 30 entries opened \(pathOpens.count): \(pathOpens.prefix(3))")
            XCTAssertEqual(sh("cd \(mnt)/k && ls -1 | xargs stat -c '%n %s %h %F' -- | sort"), expected)
        }

        let original = sh("sha256sum < \(mnt)/k/f7")
        let backing = try fx.backing("k/f7")
        sh("cp -p '\(backing)' \(fx.root)/f7.copy && rm '\(backing)' && cp -p \(fx.root)/f7.copy '\(backing)'")
        XCTAssertEqual(sh("ls -l \(mnt)/k | tail -n +2 | wc -l"), "30\n")
        XCTAssertEqual(sh("sha256sum < \(mnt)/k/f7"), original, "the copy put back reads as itself")
    }
}
