import Foundation
import XCTest

/// mount(8)-style options (issue 21, "Mounting"): `ro` and `noexec` reach the kernel, cmkfs
/// options are taken by name, and a typo is an error that names it instead of a silent default.
final class MountOptionTests: IntegrationTestCase {
    override var mountsInSetUp: Bool { false }

    func mount(_ extra: [String]) -> ShellResult {
        fx.cmkfs(["mount", vol, mnt, "--kms-dir", fx.kms] + extra)
    }

    func testReadOnlyAndNoexecReachTheKernel() throws {
        try fx.mount()
        sh("printf '#!/bin/sh\\necho ran\\n' > \(mnt)/script && chmod 755 \(mnt)/script && echo data > \(mnt)/f")
        try fx.unmount()

        XCTAssertTrue(mount(["-o", "ro,noexec"]).succeeded)
        XCTAssertTrue(FixtureMounts.options(of: mnt).split(separator: ",").contains("ro"), FixtureMounts.options(of: mnt))
        let write = fx.sh("echo more >> \(mnt)/f")
        XCTAssertTrue(write.stderr.contains("Read-only file system"), "\(write)")
        XCTAssertTrue(fx.sh("touch \(mnt)/new").stderr.contains("Read-only file system"))
        XCTAssertEqual(sh("cat \(mnt)/f"), "data\n", "reads work")
        let exec = fx.sh("\(mnt)/script")
        XCTAssertTrue(exec.stderr.contains("Permission denied"), "noexec: \(exec)")
        try fx.unmount()

        XCTAssertTrue(mount(["--read-only"]).succeeded)
        XCTAssertTrue(fx.sh("touch \(mnt)/new").stderr.contains("Read-only file system"))
        XCTAssertEqual(sh("\(mnt)/script"), "ran\n", "exec is allowed without noexec")
        try fx.unmount()
    }

    func testUnknownAndRefusedOptionsFailByName() {
        for (options, words) in [("ro,kmsdir=/x", "unknown mount option 'kmsdir=/x'"), ("suid", "always nosuid,nodev"),
                                 ("lease_renew=", "needs a value"), ("lease_renew=soon", "--lease-renew"),
                                 ("log_level=chatty", "log_level=chatty is not valid")] {
            let r = mount(["-o", options])
            XCTAssertEqual(r.status, 64, "\(options): \(r)")
            XCTAssertTrue(r.stderr.contains("cmkfs: error:") && r.stderr.contains(words), "\(options): \(r.stderr)")
            XCTAssertFalse(fx.isMounted(mnt), options)
        }
    }

    /// cmkfs options by name, and mount(8)'s own left alone, through the mount(8) helper as
    /// fstab runs it (the helper is called directly: PackagingTests covers mount -t).
    func testTheMountHelperPassesEveryOptionToCmkfs() throws {
        let helper = PackagingTests.repo + "/mount-helpers/mount.cmkfs"
        let env = "CMKFS=\(Shell.quote(MountFixture.binary))"
        sh("\(env) sh \(helper) \(vol) \(mnt) -o defaults,nofail,_netdev,x-systemd.automount -o ro,kms_dir=\(fx.kms),cache_idle_ttl=30s,log_level=debug")
        XCTAssertTrue(FixtureMounts.options(of: mnt).split(separator: ",").contains("ro"))
        XCTAssertTrue(fx.sh("touch \(mnt)/x").stderr.contains("Read-only file system"))
        try fx.unmount()
        // cache_idle_ttl=30s reached the daemon: the mount record says so.
        let mounts = fx.cmkfs(["audit", "show", vol, "--event", "mount", "--json"]).stdout
        XCTAssertTrue(mounts.contains("cache idle 30"), mounts)
        let typo = fx.sh("\(env) sh \(helper) \(vol) \(mnt) -o kmsdir=\(fx.kms)")
        XCTAssertEqual(typo.status, 64, "\(typo)")
        XCTAssertTrue(typo.stderr.contains("unknown mount option 'kmsdir="), typo.stderr)
    }
}
