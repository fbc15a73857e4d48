import Foundation
import XCTest

/// kill -9 of the mount at random moments while applications create, write, rename, truncate
/// and unlink: after each crash every file that was fsynced reads back exactly, and fsck finds
/// nothing unreadable (at most key rows of files whose unlink was cut short, which it repairs).
final class CrashChurnTests: IntegrationTestCase {
    /// Writes synced files `s<round>-<n>` (recorded in `journal` after fsync returns) and churns
    /// scratch files until killed.
    static let churn = """
        import os, random, sys, hashlib
        root, journal, tag = sys.argv[1], sys.argv[2], sys.argv[3]
        rng = random.Random(tag)
        j = open(journal, "a")
        n = 0
        while True:
            n += 1
            op = rng.random()
            try:
                if op < 0.35:
                    data = os.urandom(rng.choice([0, 1, 100, 4095, 4096, 4097, 20000, 70000]))
                    p = f"{root}/s{tag}-{n}"
                    fd = os.open(p, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o644)
                    os.write(fd, data); os.fsync(fd); os.close(fd)
                    j.write(f"s{tag}-{n} {hashlib.sha256(data).hexdigest()}\\n"); j.flush()
                elif op < 0.6:
                    p = f"{root}/scratch-{rng.randrange(30)}"
                    with open(p, "ab") as f: f.write(os.urandom(rng.randrange(1, 9000)))
                elif op < 0.75:
                    os.rename(f"{root}/scratch-{rng.randrange(30)}", f"{root}/scratch-{rng.randrange(30)}")
                elif op < 0.85:
                    os.truncate(f"{root}/scratch-{rng.randrange(30)}", rng.randrange(0, 20000))
                else:
                    os.unlink(f"{root}/scratch-{rng.randrange(30)}")
            except FileNotFoundError:
                pass
        """

    func testRandomKillsDuringChurnKeepSyncedFilesAndLeaveNothingUnreadable() throws {
        let journal = fx.root + "/synced.txt"
        _ = FileManager.default.createFile(atPath: journal, contents: nil)
        var crashes = 0
        for round in 0..<4 {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: Shell.python)
            p.arguments = ["-c", Self.churn, mnt, journal, String(round)]
            p.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
            p.standardError = FileHandle(forWritingAtPath: "/dev/null")
            try p.run()
            defer { if p.isRunning { kill(p.processIdentifier, SIGKILL) }; p.waitUntilExit() }
            usleep(UInt32.random(in: 300_000...1_200_000))
            let pid = try XCTUnwrap(fx.lockPID())
            XCTAssertEqual(kill(pid, SIGKILL), 0)
            waitUntil(deadline: 10) { !MountFixture.isAlive(pid) }
            p.waitUntilExit()
            crashes += 1
            sh("fusermount3 -u -z \(mnt)")
            let check = fx.cmkfs(["fsck", vol, "--kms-dir", fx.kms, "--json", "--repair"], timeout: 300)
            let report = (try? JSONSerialization.jsonObject(with: Data(check.stdout.utf8))) as? [String: Any]
            let kinds = Set(((report?["problems"] as? [[String: Any]]) ?? []).compactMap { $0["kind"] as? String })
            XCTAssertTrue(kinds.isSubset(of: ["orphan-rows"]), "round \(round): \(check)")
            XCTAssertEqual(check.status, 0, "round \(round): \(check)")
            try fx.mount()
            let lines = ((try? String(contentsOfFile: journal, encoding: .utf8)) ?? "").split(separator: "\n")
            let verify = python("""
                import hashlib, sys
                root, journal = sys.argv[1], sys.argv[2]
                bad = []
                for line in open(journal):
                    name, digest = line.split()
                    try:
                        if hashlib.sha256(open(f"{root}/{name}", "rb").read()).hexdigest() != digest: bad.append(name + " differs")
                    except OSError as e: bad.append(f"{name}: {e}")
                print("\\n".join(bad)); sys.exit(1 if bad else 0)
                """, [mnt, journal])
            XCTAssertTrue(verify.succeeded, "round \(round), \(lines.count) synced files: \(verify)")
            // Every scratch file left is readable too (no name without a usable file).
            sh("for f in \(mnt)/scratch-*; do [ -e \"$f\" ] && cat \"$f\" > /dev/null; done; true")
            XCTAssertTrue(fx.sh("cat \(mnt)/scratch-* > /dev/null 2>&1 || ! ls \(mnt)/scratch-* >/dev/null 2>&1").succeeded)
        }
        print("[cmkfs-it] \(crashes) kill -9 crashes during churn; synced files checked: \(((try? String(contentsOfFile: journal, encoding: .utf8)) ?? "").split(separator: "\n").count)")
    }
}
