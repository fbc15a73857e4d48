import Foundation
import XCTest

/// The control socket under clients that connect and say nothing, and a mounted rekey against a
/// slow KMS: neither may hold up the kill switch or the file's readers.
final class ControlSocketTests: IntegrationTestCase {
    var kms: KMSProcess?
    var idle: Process?

    override func tearDown() {
        if let idle, idle.isRunning { idle.terminate(); idle.waitUntilExit() }
        let kms = self.kms
        super.tearDown()
        if let problem = kms?.stop() { XCTFail(problem) }
        self.kms = nil
    }

    /// Connects `count` clients to `socket` that never send a byte; returns once all are
    /// connected. With `expectBusy`, prints how many were answered "busy" at once.
    func connectIdleClients(_ count: Int, to socket: String) throws -> String {
        let ready = fx.logs + "/idle-ready-\(count)"
        let script = """
            import socket, sys, time
            path, n, ready = sys.argv[1], int(sys.argv[2]), sys.argv[3]
            clients = []
            for _ in range(n):
                s = socket.socket(socket.AF_UNIX); s.connect(path); clients.append(s)
            time.sleep(0.5)
            busy = 0
            for s in clients:
                s.setblocking(False)
                try:
                    if b"busy" in s.recv(4096): busy += 1
                except BlockingIOError:
                    pass
            open(ready, "w").write("%d" % busy)
            time.sleep(60)
            """
        try script.write(toFile: fx.logs + "/idle.py", atomically: true, encoding: .utf8)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Shell.python)
        p.arguments = [fx.logs + "/idle.py", socket, String(count), ready]
        try p.run()
        idle = p
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            if let text = try? String(contentsOfFile: ready, encoding: .utf8), !text.isEmpty { return text }
            Thread.sleep(forTimeInterval: 0.02)
        }
        throw FixtureError("the idle clients did not connect")
    }

    /// Five clients connected and silent: `cmkfs key revoke` still flushes at once and
    /// `cache stats` still answers (one connection at a time, each idle one held the socket 5 s).
    func testIdleControlClientsDelayNeitherRevokeNorStats() throws {
        sh("printf held > \(mnt)/f && cat \(mnt)/f > /dev/null")
        _ = try connectIdleClients(5, to: vol + "/control.sock")
        let stats = fx.cmkfs(["cache", "stats", vol, "--json"], timeout: 60)
        XCTAssertTrue(stats.succeeded, "\(stats)")
        XCTAssertLessThan(stats.seconds, 3, "cache stats behind five idle clients: \(stats)")
        let revoke = fx.cmkfs(["key", "revoke", vol, "--kms-dir", fx.kms, "--reason", "idle clients"], timeout: 60)
        XCTAssertTrue(revoke.succeeded, "\(revoke)")
        XCTAssertTrue(revoke.stdout.contains("flushed"), revoke.stdout)
        XCTAssertLessThan(revoke.seconds, 3, "revoke behind five idle clients: \(revoke)")
        print(String(format: "revoke with 5 idle control clients: %.3f s (command wall time); %@", revoke.seconds,
                     revoke.stdout.split(separator: "\n").last.map(String.init) ?? ""))
        XCTAssertFalse(fx.sh("cat \(mnt)/f").succeeded, "the revocation took effect")
        XCTAssertTrue(fx.cmkfs(["key", "enable", vol, "--kms-dir", fx.kms]).succeeded)
    }

    /// Connections past the bound are answered "busy" at once rather than queued; once the
    /// idle ones go, the mount answers again.
    func testConnectionsPastTheBoundAreToldBusy() throws {
        let busy = try connectIdleClients(34, to: vol + "/control.sock")
        XCTAssertEqual(busy, "2", "32 served, 2 turned away")
        idle?.terminate()
        idle?.waitUntilExit()
        let stats = fx.cmkfs(["cache", "stats", vol, "--json"], timeout: 60)
        XCTAssertTrue(stats.succeeded, "\(stats)")
    }

    /// A mounted rekey wraps the new DEK before it locks the file: with a KMS that takes 3 s
    /// per request, readers of the file are never held up for the length of the wrap.
    func testMountedRekeyHoldsNoFileLockAcrossTheProviderCall() throws {
        try fx.unmount()
        let k = KMSProcess(socket: fx.root + "/kms.sock", state: fx.root + "/kms-state", logPath: fx.logs + "/kms.log")
        try k.start()
        kms = k
        let pvol = fx.root + "/pvol"
        let i = fx.cmkfs(["init", pvol, "--kms", "socket", "--kms-socket", k.socket])
        XCTAssertTrue(i.succeeded, "\(i)")
        let m = fx.cmkfs(["mount", pvol, mnt])
        XCTAssertTrue(m.succeeded, "\(m)")
        sh("head -c 65536 /dev/urandom > \(mnt)/f")
        _ = k.stop()
        try k.start(["--latency-ms", "3000"])
        // A reader holding the file open reads it (past the page cache: O_DIRECT) every 20 ms
        // while a rekey runs, and reports its slowest read.
        let reader = """
            import mmap, os, subprocess, sys, time
            path, vol, cmkfs = sys.argv[1], sys.argv[2], sys.argv[3]
            fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
            buf = mmap.mmap(-1, 65536)
            os.preadv(fd, [buf], 0)
            rekey = subprocess.Popen([cmkfs, "rekey", vol, "f"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            slowest = 0.0
            while rekey.poll() is None:
                t = time.monotonic(); os.preadv(fd, [buf], 0); slowest = max(slowest, time.monotonic() - t)
                time.sleep(0.02)
            out = rekey.stdout.read().decode()
            assert rekey.returncode == 0, out
            print("slowest %.3f" % slowest)
            """
        let r = python(reader, [mnt + "/f", pvol, MountFixture.binary], timeout: 120)
        XCTAssertTrue(r.succeeded, "\(r)\nmount.log: \(fx.mountLog(pvol))")
        let slowest = try XCTUnwrap(Double(r.stdout.replacingOccurrences(of: "slowest ", with: "").trimmingCharacters(in: .whitespacesAndNewlines)), r.stdout)
        XCTAssertLessThan(slowest, 1.5, "a read waited behind the rekey's 3 s provider call")
        XCTAssertTrue(fx.cmkfs(["unmount", mnt]).succeeded)
    }

    /// `key revoke` while a mounted rekey re-encrypts a large file and a reader waits on it: the
    /// rekey stops at its next block (file unchanged) instead of finishing under the revoked key
    /// with the file's lock held (before: it finished and succeeded), and the revoke returns at
    /// once.
    func testRevokeDuringAMountedRekeyStopsTheRekey() throws {
        sh("head -c 134217728 /dev/urandom > \(plain)/big && cp \(plain)/big \(mnt)/big")
        let sum = sha256(plain + "/big")
        try fx.remount()
        let rekey = Process()
        rekey.executableURL = URL(fileURLWithPath: MountFixture.binary)
        rekey.arguments = ["rekey", vol, "big", "--kms-dir", fx.kms]
        let out = Pipe()
        rekey.standardOutput = out
        rekey.standardError = out
        try rekey.run()
        defer { if rekey.isRunning { rekey.terminate() } }
        // The copy appears once the rekey holds the file's lock.
        let deadline = Date().addingTimeInterval(60)
        while ((try? FileManager.default.contentsOfDirectory(atPath: vol + "/rekey")) ?? []).isEmpty && Date() < deadline {
            Thread.sleep(forTimeInterval: 0.005)
        }
        let reader = Process()
        reader.executableURL = URL(fileURLWithPath: Shell.python)
        reader.arguments = ["-c", "import sys\ntry:\n  open(sys.argv[1], 'rb').read()\nexcept OSError: pass", mnt + "/big"]
        try reader.run()
        defer { if reader.isRunning { reader.terminate() } }
        Thread.sleep(forTimeInterval: 0.2)
        XCTAssertTrue(rekey.isRunning, "the rekey must still be running for this test to mean anything")
        let revoke = fx.cmkfs(["key", "revoke", vol, "--kms-dir", fx.kms, "--reason", "during rekey"], timeout: 120)
        XCTAssertTrue(revoke.succeeded, "\(revoke)")
        print(String(format: "revoke during a 128 MiB rekey: %.3f s", revoke.seconds))
        XCTAssertLessThan(revoke.seconds, 3, "the kill switch waited for the rekey: \(revoke)")
        rekey.waitUntilExit()
        reader.waitUntilExit()
        let said = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        XCTAssertNotEqual(rekey.terminationStatus, 0, "the rekey went on under a revoked key: \(said)")
        XCTAssertTrue(fx.cmkfs(["key", "enable", vol, "--kms-dir", fx.kms]).succeeded)
        XCTAssertEqual(sha256(mnt + "/big"), sum, "the file is unchanged")
    }
}
