import Foundation
import XCTest

/// A volume on a small ext4 with 1 KiB blocks, filled through the mount. SQLite grows its
/// `meta.db-shm` by writing one byte per 4 KiB page and then stores through a shared mapping,
/// so on 1 KiB blocks three of every four blocks stayed holes; on a full disk the first store
/// into one killed mount, fsck and `audit verify` with SIGBUS. Now every command gives a clear
/// "disk is full" (exit 10) or works, the mount keeps room for its metadata (`meta.db-reserve`),
/// and the volume mounts again once space is freed.
///
/// The ext4 image is a loop file under the fixture root, mounted by the test and unmounted
/// (with the cmkfs mount on it) whatever happens.
final class SmallBlockFullDiskTests: IntegrationTestCase {
    override var mountsInSetUp: Bool { false }

    var small: String { fx.root + "/small" }
    var svol: String { small + "/vol" }

    /// Takes all free space of the small filesystem but `kib` KiB, with `filler` on it (beside
    /// the volume, as anything else on a shared disk would).
    func leaveFree(_ kib: Int) {
        // fallocate most of it (leaving room for the filler's own extent blocks), then write
        // the rest 1 KiB at a time, so the free space ends within a block of `kib`.
        sh("""
            cd \(small) && rm -f filler filler2 && sync
            free() { echo $(( $(stat -f -c '%a' .) * $(stat -f -c '%S' .) )); }
            a=$(( $(free) - \(kib) * 1024 - 65536 )); if [ $a -gt 0 ]; then fallocate -l $a filler; fi; sync
            n=$(( ($(free) - \(kib) * 1024) / 1024 )); if [ $n -gt 0 ]; then dd if=/dev/zero of=filler2 bs=1024 count=$n conv=fsync status=none || true; fi
            """)
    }

    /// A command that must either work or say the disk is full (exit 10) — never die by a signal.
    func assertWorksOrSaysFull(_ r: ShellResult, _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertFalse(r.stderr.contains("crashed") || r.stderr.contains("Bus error"), "\(what): \(r)", file: file, line: line)
        XCTAssertTrue(r.status == 0 || (r.status == 10 && r.stderr.contains("is full")),
                      "\(what): \(r)", file: file, line: line)
    }

    func testAFullDiskWithSmallBlocksNeverCrashesAndTheVolumeMountsAgainOnceSpaceIsFreed() throws {
        let image = fx.root + "/small.img"
        sh("truncate -s 16M \(image) && mkfs.ext4 -q -F -b 1024 -m 0 \(image) && mkdir \(small) && mount -o loop \(image) \(small)")
        defer {
            _ = fx.cmkfs(["unmount", mnt])
            if !fx.sh("umount \(small)").succeeded { fx.sh("umount -l \(small)") }
        }
        try fx.initVolume(svol)
        XCTAssertGreaterThan(Int(sh("stat -c %b \(svol)/meta.db-reserve").trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0, 0,
                             "init keeps room for the metadata")
        try fx.mount(svol)
        for i in 0..<3 { makeRandomFile(plain + "/k\(i)", size: 200_000 + i) }
        sh("cp \(plain)/k* \(mnt)/ && echo victim > \(mnt)/victim && head -c 1048576 /dev/urandom > \(mnt)/spare")

        // Fill through the mount: big data, then small files (each one a key row and a name).
        let fill = fx.sh("dd if=/dev/urandom of=\(mnt)/fill bs=64k count=1000 status=none")
        XCTAssertTrue(fill.stderr.contains("No space left on device"), "\(fill)")
        let smallFiles = fx.sh("for i in $(seq 1 4000); do head -c 700 /dev/urandom > \(mnt)/s$i || exit 0; done; exit 1")
        XCTAssertTrue(smallFiles.succeeded && smallFiles.stderr.contains("No space left on device"), "\(smallFiles)")
        print("[cmkfs-it] small-block full disk after the fill: " + sh("df -k \(small) | tail -1 && ls -s \(svol)/meta.db-reserve"))
        // The metadata still works on the full disk: files read, and one can be deleted.
        XCTAssertEqual(sha256(mnt + "/k0"), sha256(plain + "/k0"))
        sh("rm \(mnt)/victim")
        // Space freed by an unlink goes to the reserve first, while the mount runs: a reserve the
        // database used up (released here by hand, as a full disk does) is taken back.
        sh("truncate -s 0 \(svol)/meta.db-reserve && rm \(mnt)/spare")
        let deadline = Date().addingTimeInterval(60)
        var reserved = 0
        while Date() < deadline {
            reserved = Int(sh("stat -c %b \(svol)/meta.db-reserve").trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
            if reserved * 512 >= 512 << 10 { break }
            usleep(20_000)
        }
        XCTAssertGreaterThanOrEqual(reserved * 512, 512 << 10, "the reserve is taken back after an unlink freed space")
        try fx.unmount()
        // Full to the last block, the volume still mounts: the reserve is its room.
        try fx.mount(svol)
        XCTAssertEqual(sha256(mnt + "/k1"), sha256(plain + "/k1"))
        try fx.unmount()

        // Every amount of free space around the WAL index's 32 KiB, with the reserve gone too
        // (used up, or deleted by hand): mount, fsck and audit verify work or say "full".
        var outcomes: [String] = []
        for kib in [0, 4, 8, 12, 16, 20, 24, 28, 32, 40, 48, 64] {
            sh("rm -f \(svol)/meta.db-reserve")
            leaveFree(kib)
            let mount = fx.cmkfs(["mount", svol, mnt, "--kms-dir", fx.kms])
            assertWorksOrSaysFull(mount, "mount with \(kib) KiB free")
            if mount.succeeded { try fx.unmount() }
            let fsck = fx.cmkfs(["fsck", svol, "--kms-dir", fx.kms, "--no-blocks"])
            assertWorksOrSaysFull(fsck, "fsck with \(kib) KiB free")
            let verify = fx.cmkfs(["audit", "verify", svol])
            assertWorksOrSaysFull(verify, "audit verify with \(kib) KiB free")
            outcomes.append("\(kib) KiB: mount \(mount.status) fsck \(fsck.status) verify \(verify.status)")
        }
        print("[cmkfs-it] small-block full disk, reserve removed: " + outcomes.joined(separator: "; "))

        // Space freed: it mounts again and every file reads back.
        sh("rm -f \(small)/filler \(small)/filler2")
        try fx.mount(svol)
        for i in 0..<3 { XCTAssertEqual(sha256(mnt + "/k\(i)"), sha256(plain + "/k\(i)")) }
        sh("rm \(mnt)/fill && echo new > \(mnt)/new && grep -q new \(mnt)/new")
        try fx.unmount()
        let check = fx.cmkfs(["fsck", svol, "--kms-dir", fx.kms])
        XCTAssertEqual(check.status, 0, "\(check)")
        XCTAssertTrue(fx.cmkfs(["audit", "verify", svol]).succeeded)
        XCTAssertGreaterThan(Int(sh("stat -c %b \(svol)/meta.db-reserve").trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0, 0,
                             "the reserve is back once there is room")
    }
}
