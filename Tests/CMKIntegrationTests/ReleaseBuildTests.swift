import Foundation
import XCTest

/// The release build is what users run (the quick start, `make install`, the benchmarks), and the
/// optimizer once miscompiled it where the debug build was right (see `isAllZero` in
/// Sources/CMKFormat/ContentScratch.swift): a write over a hole failed with a garbage error and
/// the daemon crashed. So one test builds release and runs the stress seeds that crashed it.
final class ReleaseBuildTests: IntegrationTestCase {
    override var mountsInSetUp: Bool { false }

    static let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().path

    func testReleaseBuildSurvivesTheStressSeedsThatCrashedIt() throws {
        // Its own scratch directory (ignored by git), so it never waits on the debug build's lock.
        let scratch = Self.repo + "/.build-release-test"
        let build = Shell.run("/usr/bin/env", ["PATH=/opt/swift/usr/bin:/usr/local/bin:/usr/bin:/bin", "swift", "build", "-c", "release",
                                               "--package-path", Self.repo, "--scratch-path", scratch, "--product", "cmkfs"],
                              timeout: 1200, logDir: fx.logs, label: "swift build -c release")
        XCTAssertTrue(build.succeeded, "\(build)")
        let cmkfs = scratch + "/release/cmkfs"
        let rvol = fx.root + "/rvol"
        XCTAssertTrue(Shell.run(cmkfs, ["init", rvol, "--kms-dir", fx.kms], logDir: fx.logs).succeeded)
        let m = Shell.run(cmkfs, ["mount", rvol, mnt, "--kms-dir", fx.kms], logDir: fx.logs)
        XCTAssertTrue(m.succeeded, "\(m)")
        defer { _ = Shell.run(cmkfs, ["unmount", mnt], logDir: fx.logs) }
        // The smallest trigger: a 10-byte write at 9000 into an empty file.
        py("""
            import os, sys
            fd = os.open(sys.argv[1], os.O_CREAT | os.O_RDWR, 0o644)
            os.pwrite(fd, b"0123456789", 9000)
            assert os.pread(fd, 20, 8995) == bytes(5) + b"0123456789", "wrong content"
            os.close(fd)
            """, [mnt + "/f"])
        for (seed, extra) in [(531_086_819, [String]()), (1_626_877_088, ["--no-sparse"])] {
            let r = Shell.run(Shell.python, [StressTests.script, "--mount", mnt, "--state", plain + "/state-\(seed)",
                                             "--workers", "4", "--seconds", "15", "--seed", "\(seed)", "--hang-seconds", "30"] + extra,
                              timeout: 120, logDir: fx.logs, label: "stress.py seed \(seed)")
            XCTAssertTrue(r.succeeded, "release build, seed \(seed): \(r)\nmount.log: \(fx.mountLog(rvol))")
        }
        XCTAssertTrue(fx.isMounted(mnt), "the release daemon is still serving")
    }
}
