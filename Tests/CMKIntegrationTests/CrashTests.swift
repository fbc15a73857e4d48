import Foundation
import XCTest

/// The daemon dies (SIGKILL) with the mount live: after clearing the dead mount and mounting
/// again, everything that was fsynced reads back intact.
final class CrashTests: IntegrationTestCase {
    func testKillDashNineThenRemountKeepsFsyncedFiles() throws {
        makeRandomFile(plain + "/a", size: 3 * 1024 * 1024 + 17)
        makeRandomFile(plain + "/b", size: 70_001)
        makeRandomFile(plain + "/c", size: 4096)
        sh("mkdir \(mnt)/dir")
        sh("dd if=\(plain)/a of=\(mnt)/dir/a bs=65536 conv=fsync status=none")
        sh("cp \(plain)/b \(mnt)/b && sync \(mnt)/b")
        XCTAssertEqual(py("""
            import os, sys
            src, dst = sys.argv[1], sys.argv[2]
            fd = os.open(dst, os.O_CREAT | os.O_WRONLY, 0o644)
            os.write(fd, open(src, 'rb').read()); os.fdatasync(fd)
            os.setxattr(dst, 'user.k', b'v'); os.fsync(fd); os.close(fd)
            print('synced')
            """, [plain + "/c", mnt + "/c"]), "synced\n")
        // Overwrite part of a synced file and sync again: the new bytes must be what survives.
        sh("printf 'OVERWRITTEN' | dd of=\(mnt)/dir/a bs=1 seek=4090 conv=notrunc,fsync status=none")
        sh("printf 'OVERWRITTEN' | dd of=\(plain)/a bs=1 seek=4090 conv=notrunc status=none")
        // A file written after the last sync (whatever happens to it, the mount must come back).
        sh("head -c 10000 /dev/urandom > \(mnt)/unsynced")

        let pid = try XCTUnwrap(fx.lockPID(), "mount.lock names the daemon")
        XCTAssertTrue(MountFixture.isCmkfsDaemon(pid, volume: vol), "pid \(pid) is the daemon")
        XCTAssertEqual(kill(pid, SIGKILL), 0)
        waitUntil(deadline: 10) { !MountFixture.isAlive(pid) }
        XCTAssertFalse(MountFixture.isAlive(pid), "the daemon died")

        // The dead mount answers ENOTCONN (or ECONNABORTED, when the kernel aborted the connection
        // with requests in flight); status no longer calls the volume mounted.
        let stale = shFails("ls \(mnt)", timeout: 30)
        XCTAssertTrue(stale.stderr.contains("Transport endpoint is not connected")
                      || stale.stderr.contains("Software caused connection abort"), "\(stale)")
        XCTAssertEqual(try fx.status()["mounted"] as? Bool, false)
        // Mounting over the dead mount is refused with a hint, until it is cleared.
        let refused = fx.cmkfs(["mount", vol, mnt, "--kms-dir", fx.kms])
        XCTAssertEqual(refused.status, 6, "\(refused)")
        XCTAssertTrue(refused.stderr.contains("fusermount3 -u -z"), "\(refused)")
        sh("fusermount3 -u -z \(mnt)")
        XCTAssertFalse(fx.isMounted(mnt))

        try fx.mount()
        XCTAssertEqual(sha256(mnt + "/dir/a"), sha256(plain + "/a"))
        XCTAssertEqual(sha256(mnt + "/b"), sha256(plain + "/b"))
        XCTAssertEqual(sha256(mnt + "/c"), sha256(plain + "/c"))
        XCTAssertEqual(py("import os, sys; print(os.getxattr(sys.argv[1], 'user.k').decode())", [mnt + "/c"]), "v\n")
        // The unsynced file is whole or absent, never unreadable garbage.
        let unsynced = fx.sh("test ! -e \(mnt)/unsynced || cat \(mnt)/unsynced > /dev/null")
        XCTAssertTrue(unsynced.succeeded, "\(unsynced)")
        let count = try fx.fileCount()
        XCTAssertTrue(count == 3 || count == 4, "file_count \(count)")
        XCTAssertEqual(try fx.status()["mounted"] as? Bool, true)
    }
}
