import Foundation
import XCTest

/// The kill switch as the customer pulls it: the master key disabled in `cmkfs-kms` (not
/// through cmkfs), or the KMS gone past the lease's maximum lifetime. Pages the kernel already
/// cached for a file held open must stop being served too: a reader gets an error, a mapped
/// reader SIGBUS.
final class KillSwitchTests: SocketKMSTestCase {

    /// A socket-KMS volume mounted with `mountArgs`; returns the KMS and the master key id.
    func mountOnSocketKMS(_ mountArgs: [String]) throws -> (KMSProcess, String) {
        let k = KMSProcess(socket: fx.root + "/kms.sock", state: fx.root + "/kms-state", logPath: fx.logs + "/kms.log")
        try k.start()
        kms = k
        let i = fx.cmkfs(["init", pvol, "--kms", "socket", "--kms-socket", k.socket])
        guard i.succeeded else { throw FixtureError("init failed: \(i)") }
        let m = fx.cmkfs(["mount", pvol, mnt] + mountArgs)
        guard m.succeeded else { throw FixtureError("mount failed: \(m)\n\(fx.mountLog(pvol))") }
        let keyID = try XCTUnwrap(k.keyCommand(["list"], logDir: fx.logs).stdout.split(separator: " ").first.map(String.init))
        return (k, keyID)
    }

    /// Holds `file` open with its first page in the kernel's cache (read and mapped), runs
    /// `cut` (argv), then reads the cached page every 5 ms until it fails; prints
    /// `trial <seconds from cut to the failed read> <errno name> <mapped reader's fate>` per trial.
    /// Between trials `restore` (argv, may be empty) runs and the file must open again. Each cut
    /// waits a random 0…`jitter` s first, so trials do not all land at one phase of the renewal.
    static let holder = """
        import errno, json, mmap, os, random, signal, subprocess, sys, time
        path, trials, cut, restore, limit = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]), json.loads(sys.argv[4]), float(sys.argv[5])
        jitter = float(sys.argv[6])
        for trial in range(trials):
            deadline = time.monotonic() + 30
            while True:
                try:
                    fd = os.open(path, os.O_RDONLY); break
                except OSError:
                    if time.monotonic() > deadline: sys.exit("the file does not open again after restore")
                    time.sleep(0.05)
            first = os.pread(fd, 4096, 0)
            assert first[:6] == b"cached", first[:20]
            m = mmap.mmap(fd, 4096, prot=mmap.PROT_READ)
            assert m[:6] == b"cached"
            time.sleep(random.uniform(0, jitter))
            start = time.monotonic()
            subprocess.run(cut, check=True, stdout=subprocess.DEVNULL)
            cmd = time.monotonic() - start
            failed = None
            while time.monotonic() - start < limit:
                try:
                    os.pread(fd, 4096, 0)
                except OSError as e:
                    failed = (time.monotonic() - start, errno.errorcode[e.errno]); break
                time.sleep(0.005)
            if failed is None:
                print("trial still-readable %.1f s after the cut" % limit, flush=True); sys.exit(0)
            pid = os.fork()
            if pid == 0:
                signal.signal(signal.SIGBUS, signal.SIG_DFL)
                try:
                    b = m[0:6]
                    os._exit(0 if b == b"cached" else 3)
                except Exception:
                    os._exit(4)
            _, status = os.waitpid(pid, 0)
            fate = "SIGBUS" if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGBUS else \\
                   ("mapped-still-readable" if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0 else "status-%d" % status)
            print("trial %.3f %s %s cmd=%.3f" % (failed[0], failed[1], fate, cmd), flush=True)
            m.close(); os.close(fd)
            if restore: subprocess.run(restore, check=True, stdout=subprocess.DEVNULL)
        """

    /// Runs `holder`; returns (seconds, errno name, mapped fate) per trial.
    func cutCachedReads(_ path: String, trials: Int, cut: [String], restore: [String], limit: Double, jitter: Double = 0) throws -> [(Double, String, String)] {
        let json = { (a: [String]) in String(decoding: try! JSONSerialization.data(withJSONObject: a), as: UTF8.self) }
        let r = python(Self.holder, [path, String(trials), json(cut), json(restore), String(limit), String(jitter)], timeout: Double(trials) * (limit + 40))
        XCTAssertTrue(r.succeeded, "\(r)\nmount.log: \(fx.mountLog(pvol))")
        var out: [(Double, String, String)] = []
        for line in r.stdout.split(separator: "\n") where line.hasPrefix("trial ") {
            let f = line.split(separator: " ")
            guard let seconds = Double(f[1]) else { XCTFail(String(line)); continue }
            out.append((seconds, String(f[2]), String(f[3])))
        }
        XCTAssertEqual(out.count, trials, "\(r.stdout)\nmount.log: \(fx.mountLog(pvol))")
        return out
    }

    func percentile(_ values: [Double], _ p: Double) -> Double {
        let sorted = values.sorted()
        return sorted[min(sorted.count - 1, Int((p * Double(sorted.count)).rounded(.up)) - 1)]
    }

    /// `cmkfs-kms key disable` on the customer's side: a page the kernel cached for an open file
    /// is refused (EACCES) within one renewal, and a mapped reader of it gets SIGBUS.
    /// CMKFS_KILL_SWITCH_TRIALS (default 3) and CMKFS_KILL_SWITCH_RENEW (default 1s) set how many
    /// trials and the --lease-renew for the measurement in docs/operator-guide.md.
    func testKMSSideDisableCutsPagesTheKernelCached() throws {
        let env = ProcessInfo.processInfo.environment
        let trials = Int(env["CMKFS_KILL_SWITCH_TRIALS"] ?? "") ?? 3
        let renew = env["CMKFS_KILL_SWITCH_RENEW"] ?? "1s"
        let renewSeconds = try XCTUnwrap(Double(renew.dropLast()))
        let (k, keyID) = try mountOnSocketKMS(["--lease-renew", renew])
        py("open(__import__('sys').argv[1], 'wb').write(b'cached' + b'x' * 100000)", [mnt + "/f"])
        let kmsCommand = [KMSProcess.binary, "key"], state = ["--state", k.state]
        let results = try cutCachedReads(mnt + "/f", trials: trials, cut: kmsCommand + ["disable", keyID] + state,
                                         restore: kmsCommand + ["enable", keyID] + state, limit: renewSeconds * 2 + 5,
                                         jitter: renewSeconds)
        for (seconds, name, fate) in results {
            XCTAssertEqual(name, "EACCES")
            XCTAssertEqual(fate, "SIGBUS", "a mapped reader of a cached page")
            XCTAssertLessThan(seconds, renewSeconds + 3, "one renewal plus the maintenance tick (≤ 1 s), with room for a loaded machine")
        }
        let latencies = results.map(\.0)
        if !latencies.isEmpty {
            print("kill switch (--lease-renew \(renew), \(trials) trials): p50 \(percentile(latencies, 0.5)) s, p99 \(percentile(latencies, 0.99)) s, "
                  + "min \(latencies.min()!) s; all: \(latencies.map { String(format: "%.3f", $0) }.joined(separator: " "))")
        }
        XCTAssertTrue(fx.mountLog(pvol).contains("provider reports") || fx.mountLog(pvol).contains("provider refused"), fx.mountLog(pvol))
    }

    /// The KMS killed: once the maximum lifetime passes without a renewal, the cached page of an
    /// open file is refused (EIO: the lease ran out) and a mapped reader gets SIGBUS.
    func testLifetimeExpiryWithTheKMSGoneCutsPagesTheKernelCached() throws {
        let (k, _) = try mountOnSocketKMS(["--lease-renew", "500ms", "--cache-max-lifetime", "2s"])
        py("open(__import__('sys').argv[1], 'wb').write(b'cached' + b'x' * 100000)", [mnt + "/f"])
        let results = try cutCachedReads(mnt + "/f", trials: 1, cut: ["/bin/kill", "-KILL", String(k.pid ?? -1)], restore: [], limit: 8)
        for (seconds, name, fate) in results {
            XCTAssertEqual(name, "EIO")
            XCTAssertEqual(fate, "SIGBUS")
            XCTAssertLessThan(seconds, 2 + 0.5 + 3, "the lifetime, one renewal and the maintenance tick, with room for a loaded machine")
        }
        XCTAssertTrue(fx.mountLog(pvol).contains("passed its lease"), fx.mountLog(pvol))
    }
}
