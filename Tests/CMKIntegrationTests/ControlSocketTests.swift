import Foundation
import Glibc
import XCTest
import CMKControl

/// The control socket under clients that connect and say nothing, and a mounted rekey against a
/// slow KMS: neither may hold up the kill switch or the file's readers.
final class ControlSocketTests: SocketKMSTestCase {
    /// This class's tests mount in setUp (the embedded volume) and add a KMS where they need one.
    override var mountsInSetUp: Bool { true }
    var idle: Process?
    /// The idle clients' stdin: they stay connected until it closes.
    var idleHold: Pipe?

    override func tearDown() {
        if let idle, idle.isRunning { idle.terminate(); idle.waitUntilExit() }
        idleHold = nil
        super.tearDown()
    }

    /// Connects `count` clients to `socket` that never send a byte and stay until the test
    /// closes their stdin; returns once all are connected, with how many were answered "busy".
    /// With `lastIsTurnedAway`, it first waits (≤ 20 s) for the last one's answer: the mount
    /// accepts in order, so once the last is answered every earlier answer has been sent.
    func connectIdleClients(_ count: Int, to socket: String, lastIsTurnedAway: Bool = false) throws -> String {
        let ready = fx.logs + "/idle-ready-\(count)"
        let script = """
            import select, socket, sys
            path, n, ready, wait_last = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4] == "1"
            clients = []
            for _ in range(n):
                s = socket.socket(socket.AF_UNIX); s.connect(path); clients.append(s)
            if wait_last and not select.select([clients[-1]], [], [], 20)[0]:
                sys.exit("the last client was never answered")
            busy = 0
            for s in clients:
                s.setblocking(False)
                try:
                    if b"busy" in s.recv(4096): busy += 1
                except BlockingIOError:
                    pass
            open(ready, "w").write("%d" % busy)
            sys.stdin.read()
            """
        try script.write(toFile: fx.logs + "/idle.py", atomically: true, encoding: .utf8)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Shell.python)
        p.arguments = [fx.logs + "/idle.py", socket, String(count), ready, lastIsTurnedAway ? "1" : "0"]
        let hold = Pipe()
        p.standardInput = hold
        idleHold = hold
        try p.run()
        idle = p
        var text = ""
        waitUntil(deadline: 30) {
            text = (try? String(contentsOfFile: ready, encoding: .utf8)) ?? ""
            return !text.isEmpty || !p.isRunning
        }
        guard !text.isEmpty else { throw FixtureError("the idle clients did not connect") }
        return text
    }

    /// Whether `pid` is inside openat(2) or read(2) (x86-64 syscalls 257 and 0).
    static func inOpenOrRead(_ pid: pid_t) -> Bool {
        guard let call = try? String(contentsOfFile: "/proc/\(pid)/syscall", encoding: .utf8) else { return false }
        return ["257", "0"].contains(call.split(separator: " ").first ?? "")
    }

    /// Five clients connected and silent: `cmkfs key revoke` still flushes at once and
    /// `cache stats` still answers (one connection at a time, each idle one held the socket 5 s).
    func testIdleControlClientsDelayNeitherRevokeNorStats() throws {
        sh("printf held > \(mnt)/f && cat \(mnt)/f > /dev/null")
        _ = try connectIdleClients(5, to: vol + "/control.sock")
        let stats = fx.cmkfs(["cache", "stats", vol, "--json"], timeout: 60)
        XCTAssertTrue(stats.succeeded, "\(stats)")
        // Served one at a time, `cache stats` would first wait out a silent client's 5 s deadline.
        XCTAssertLessThan(stats.seconds, 5, "cache stats behind five idle clients: \(stats)")
        let revoke = fx.cmkfs(["key", "revoke", vol, "--kms-dir", fx.kms, "--reason", "idle clients"], timeout: 60)
        XCTAssertTrue(revoke.succeeded, "\(revoke)")
        XCTAssertTrue(revoke.stdout.contains("flushed"), revoke.stdout)
        XCTAssertLessThan(revoke.seconds, 5, "revoke behind five idle clients: \(revoke)")
        print(String(format: "revoke with 5 idle control clients: %.3f s (command wall time); %@", revoke.seconds,
                     revoke.stdout.split(separator: "\n").last.map(String.init) ?? ""))
        XCTAssertFalse(fx.sh("cat \(mnt)/f").succeeded, "the revocation took effect")
        XCTAssertTrue(fx.cmkfs(["key", "enable", vol, "--kms-dir", fx.kms]).succeeded)
    }

    /// The control socket's `audit` request chains only the event names and results `audit show
    /// --event` accepts (before: any name, so a typo'd `revokee` record no SIEM rule selects);
    /// the refusal lists the valid names and nothing reaches the log.
    func testAuditRequestRefusesAnUnknownEventOrResult() throws {
        func send(_ line: String) -> ShellResult {
            Shell.run(Shell.python, ["-c", MountFixture.controlRequest, vol + "/control.sock", line],
                      timeout: 60, logDir: fx.logs, label: "control request: audit")
        }
        let typo = send(#"{"op":"audit","event":"revokee","key_id":"mk-1","reason":"typo","durable":true}"#)
        XCTAssertFalse(typo.succeeded, "\(typo)")
        XCTAssertTrue(typo.stdout.contains("unknown audit event 'revokee'") && typo.stdout.contains("valid events: open, create"),
                      typo.stdout)
        let result = send(#"{"op":"audit","event":"revoke","result":"maybe","reason":"bad result","durable":true}"#)
        XCTAssertFalse(result.succeeded, "\(result)")
        XCTAssertTrue(result.stdout.contains("unknown audit result 'maybe'"), result.stdout)
        let good = send(#"{"op":"audit","event":"enable","key_id":"mk-1","reason":"a real one","durable":true}"#)
        XCTAssertTrue(good.succeeded, "\(good)")
        let shown = fx.cmkfs(["audit", "show", vol, "--json", "--kms-dir", fx.kms])
        XCTAssertTrue(shown.succeeded, "\(shown)")
        XCTAssertFalse(shown.stdout.contains("revokee") || shown.stdout.contains("bad result"), shown.stdout)
        XCTAssertTrue(shown.stdout.contains(#""detail":"a real one""#), shown.stdout)
    }

    /// Connections past the bound are answered "busy" at once rather than queued; once the
    /// idle ones go, the mount answers again.
    func testConnectionsPastTheBoundAreToldBusy() throws {
        let busy = try connectIdleClients(34, to: vol + "/control.sock", lastIsTurnedAway: true)
        XCTAssertEqual(busy, "2", "32 served, 2 turned away")
        idle?.terminate()
        idle?.waitUntilExit()
        let stats = fx.cmkfs(["cache", "stats", vol, "--json"], timeout: 60)
        XCTAssertTrue(stats.succeeded, "\(stats)")
    }

    /// A mounted rekey wraps the new DEK before it locks the file: with a KMS that takes 4.5 s
    /// per request, readers of the file are never held up for the length of the wrap.
    func testMountedRekeyHoldsNoFileLockAcrossTheProviderCall() throws {
        try fx.unmount()
        let k = KMSProcess(socket: fx.root + "/kms.sock", state: fx.root + "/kms-state", logPath: fx.logs + "/kms.log")
        try k.start()
        kms = k
        let pvol = fx.root + "/pvol"
        let i = fx.cmkfs(["init", pvol, "--kms", "socket", "--kms-socket", k.socket])
        XCTAssertTrue(i.succeeded, "\(i)")
        // The mount and the rekey command wait up to 30 s for the KMS (CMKFS_KMS_TIMEOUT_MS): its
        // 4.5 s per request would leave a loaded machine only 0.5 s under the default 5 s.
        let m = Shell.run("/usr/bin/env", ["CMKFS_KMS_TIMEOUT_MS=30000", MountFixture.binary, "mount", pvol, mnt],
                          timeout: 60, logDir: fx.logs, label: "cmkfs mount (30 s KMS timeout)")
        XCTAssertTrue(m.succeeded, "\(m)")
        sh("head -c 65536 /dev/urandom > \(mnt)/f")
        _ = k.stop()
        try k.start(["--latency-ms", "4500"])
        // A reader holding the file open reads it (past the page cache: O_DIRECT) every 20 ms
        // while a rekey runs, and reports its slowest read.
        let reader = """
            import mmap, os, subprocess, sys, time
            path, vol, cmkfs = sys.argv[1], sys.argv[2], sys.argv[3]
            fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
            buf = mmap.mmap(-1, 65536)
            os.preadv(fd, [buf], 0)
            rekey = subprocess.Popen([cmkfs, "rekey", vol, "f"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     env=dict(os.environ, CMKFS_KMS_TIMEOUT_MS="30000"))
            slowest = 0.0
            while rekey.poll() is None:
                t = time.monotonic(); os.preadv(fd, [buf], 0); slowest = max(slowest, time.monotonic() - t)
                time.sleep(0.02)
            out = rekey.stdout.read().decode()
            assert rekey.returncode == 0, out
            print("slowest %.3f" % slowest)
            """
        let r = python(reader, [mnt + "/f", pvol, MountFixture.binary], timeout: 180)
        XCTAssertTrue(r.succeeded, "\(r)\nmount.log: \(fx.mountLog(pvol))")
        let slowest = try XCTUnwrap(Double(r.stdout.replacingOccurrences(of: "slowest ", with: "").trimmingCharacters(in: .whitespacesAndNewlines)), r.stdout)
        // A read held behind the wrap waits about the KMS's 4.5 s; an unhindered one takes
        // milliseconds (the bound leaves room for a loaded machine).
        XCTAssertLessThan(slowest, 3, "a read waited behind the rekey's 4.5 s provider call")
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
        XCTAssertTrue(waitUntil(deadline: 60, interval: 0.005) {
            !((try? FileManager.default.contentsOfDirectory(atPath: vol + "/rekey")) ?? []).isEmpty || !rekey.isRunning
        }, "the rekey never made its copy")
        let reader = Process()
        reader.executableURL = URL(fileURLWithPath: Shell.python)
        let opening = fx.logs + "/reader-opening"
        reader.arguments = ["-c", "import sys\nopen(sys.argv[2], 'w').close()\ntry:\n  open(sys.argv[1], 'rb').read()\nexcept OSError: pass",
                            mnt + "/big", opening]
        try reader.run()
        defer { if reader.isRunning { reader.terminate() } }
        // The reader sits in open(2) or read(2) of the file, waiting on the file's lock.
        XCTAssertTrue(waitUntil(deadline: 60, interval: 0.005) {
            !reader.isRunning || (FileManager.default.fileExists(atPath: opening) && Self.inOpenOrRead(reader.processIdentifier))
        }, "the reader never got to the file")
        XCTAssertTrue(rekey.isRunning, "the rekey must still be running for this test to mean anything")
        let revoke = fx.cmkfs(["key", "revoke", vol, "--kms-dir", fx.kms, "--reason", "during rekey"], timeout: 120)
        XCTAssertTrue(revoke.succeeded, "\(revoke)")
        report("revoke during a 128 MiB rekey", seconds: revoke.seconds)
        // The rekey itself takes only seconds, so no time bound tells "waited for it" from "did
        // not": the rekey's failure below does. This bound catches a hang.
        XCTAssertLessThan(revoke.seconds, 30, "the kill switch hung: \(revoke)")
        rekey.waitUntilExit()
        reader.waitUntilExit()
        let said = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        XCTAssertNotEqual(rekey.terminationStatus, 0, "the rekey went on under a revoked key: \(said)")
        XCTAssertTrue(fx.cmkfs(["key", "enable", vol, "--kms-dir", fx.kms]).succeeded)
        XCTAssertEqual(sha256(mnt + "/big"), sum, "the file is unchanged")
    }

    /// A mounted rekey answers the control request as a FUSE reply would answer an application:
    /// the errno `FSError.errno` decides, and a message naming the file; a success carries neither.
    func testMountedRekeyAnswersTheErrnoOfItsFailure() throws {
        let socket = fx.vol + "/control.sock"
        let missing = try ControlChannel.send(.rekey(path: "no-such-file"), to: socket, timeoutMilliseconds: 10_000)
        XCTAssertFalse(missing.ok)
        XCTAssertEqual(missing.errno, ENOENT)
        XCTAssertEqual(missing.error, "/no-such-file: No such file or directory")
        let outside = try ControlChannel.send(.rekey(path: "../etc/passwd"), to: socket, timeoutMilliseconds: 10_000)
        XCTAssertFalse(outside.ok)
        XCTAssertEqual(outside.errno, EINVAL)
        XCTAssertEqual(outside.error, "not a path inside the volume: ../etc/passwd")
        try Data("content".utf8).write(to: URL(fileURLWithPath: mnt + "/f"))
        let done = try ControlChannel.send(.rekey(path: "f"), to: socket, timeoutMilliseconds: 10_000)
        XCTAssertTrue(done.ok, done.error ?? "")
        XCTAssertNil(done.errno)
        XCTAssertNil(done.error)
        XCTAssertEqual(try String(contentsOfFile: mnt + "/f", encoding: .utf8), "content")
    }
}
