import Foundation
import XCTest

/// Key leasing against a real `cmkfs-kms` process: while the KMS is unreachable, cached keys serve
/// until their maximum lifetime, uncached ones fail at once, and after the lifetime all fail.
final class LeasingTests: IntegrationTestCase {
    override var mountsInSetUp: Bool { false }
    var kms: KMSProcess?
    var pvol: String { fx.root + "/pvol" }

    override func tearDown() {
        let kms = self.kms
        super.tearDown()
        if let problem = kms?.stop() { XCTFail(problem) }
        self.kms = nil
    }

    func testUnreachableKMSServesCachedKeysUntilTheirLifetimeThenFails() throws {
        let k = KMSProcess(socket: fx.root + "/kms.sock", state: fx.root + "/kms-state", logPath: fx.logs + "/kms.log")
        try k.start()
        kms = k
        XCTAssertTrue(fx.cmkfs(["init", pvol, "--kms", "socket", "--kms-socket", k.socket]).succeeded)
        let mountArgs = ["mount", pvol, mnt, "--cache-max-lifetime", "3s", "--lease-renew", "250ms", "--cache-idle-ttl", "1h"]
        XCTAssertTrue(fx.cmkfs(mountArgs).succeeded)
        sh("printf cached > \(mnt)/a && printf uncached > \(mnt)/b")
        XCTAssertTrue(fx.cmkfs(["cache", "flush", pvol]).succeeded)
        XCTAssertEqual(sh("cat \(mnt)/a"), "cached", "a's key is cached again, b's is not")
        Thread.sleep(forTimeInterval: 0.5)   // at least one successful renewal
        k.kill9()
        let killedAt = Date()
        XCTAssertEqual(sh("cat \(mnt)/a"), "cached", "a cached key keeps serving while the KMS is down")
        let b = fx.sh("cat \(mnt)/b")
        XCTAssertFalse(b.succeeded)
        XCTAssertTrue(b.stderr.contains("Input/output error"), "\(b)")
        // Past the lifetime (counted from the last successful renewal) every read fails.
        var failedAfter: Double?
        while Date().timeIntervalSince(killedAt) < 8 {
            if !fx.sh("cat \(mnt)/a").succeeded { failedAfter = Date().timeIntervalSince(killedAt); break }
            Thread.sleep(forTimeInterval: 0.1)
        }
        let seconds = try XCTUnwrap(failedAfter, "a cached key still served 8 s after the KMS died (lifetime 3 s)")
        XCTAssertGreaterThan(seconds, 2.0, "served for about the lifetime, not less")
        XCTAssertLessThan(seconds, 4.5)
        report("KMS killed → cached key stops serving", seconds: seconds)
        let stats = fx.cmkfs(["cache", "stats", pvol, "--json"])
        XCTAssertTrue(stats.stdout.contains("\"unreachable\""), stats.stdout)
        XCTAssertTrue(fx.mountLog(pvol).contains("renew failed"), fx.mountLog(pvol))
        // The KMS comes back: new opens work again.
        try k.start()
        XCTAssertEqual(sh("cat \(mnt)/a \(mnt)/b"), "cacheduncached")
    }

    /// The customer disables the key in `cmkfs-kms` (not through cmkfs): a file held open with its
    /// key cached fails its next read within one renewal interval.
    func testKeyDisabledInCmkfsKMSCutsAnOpenFileWithinOneRenewal() throws {
        let k = KMSProcess(socket: fx.root + "/kms.sock", state: fx.root + "/kms-state", logPath: fx.logs + "/kms.log")
        try k.start()
        kms = k
        XCTAssertTrue(fx.cmkfs(["init", pvol, "--kms", "socket", "--kms-socket", k.socket]).succeeded)
        XCTAssertTrue(fx.cmkfs(["mount", pvol, mnt, "--lease-renew", "300ms"]).succeeded)
        sh("printf held > \(mnt)/f")
        let keyID = try XCTUnwrap(k.keyCommand(["list"], logDir: fx.logs).stdout.split(separator: " ").first.map(String.init))
        let r = python("""
            import os, subprocess, sys, time
            path, kms, key, state = sys.argv[1:5]
            fd = os.open(path, os.O_RDONLY)
            assert os.pread(fd, 10, 0) == b'held'
            subprocess.run([kms, 'key', 'disable', key, '--state', state], check=True, capture_output=True)
            start = time.monotonic()
            while time.monotonic() - start < 5:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                try:
                    os.pread(fd, 10, 0)
                except PermissionError:
                    print('cut after %.2f s' % (time.monotonic() - start)); break
                time.sleep(0.02)
            else:
                print('still readable after 5 s')
            """, [mnt + "/f", KMSProcess.binary, keyID, fx.root + "/kms-state"], timeout: 60)
        XCTAssertTrue(r.stdout.hasPrefix("cut after "), "\(r)\nmount.log: \(fx.mountLog(pvol))")
        if let seconds = Double(r.stdout.dropFirst("cut after ".count).prefix { $0 != " " }) {
            XCTAssertLessThan(seconds, 1.5, "one renewal interval (300 ms) plus the sweep tick")
            report("key disabled in cmkfs-kms → held-open file cut", seconds: seconds)
        }
        XCTAssertTrue(k.keyCommand(["enable", keyID], logDir: fx.logs).succeeded)
        XCTAssertEqual(sh("cat \(mnt)/f"), "held", "a new open works once the customer enables the key")
    }
}
