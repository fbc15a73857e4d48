import Foundation
import XCTest

/// `--fuse-transport`: FUSE over io_uring where the kernel offers it, a precise refusal where it
/// does not, and the kill switch, big transfers, status and clean stops over the rings.
final class FuseRingTests: IntegrationTestCase {
    override var fuseTransport: String? { "io_uring" }

    private func metric(_ name: String) -> UInt64 {
        let out = fx.cmkfs(["metrics", vol]).stdout
        let line = out.split(separator: "\n").first { $0.hasPrefix(name + " ") }
        return line.flatMap { $0.split(separator: " ").last }.flatMap { UInt64($0) } ?? 0
    }

    func testStatusNamesTheRingAndEveryCPUHasItsThreads() throws {
        let status = fx.cmkfs(["status", vol, "--kms-dir", fx.kms])
        XCTAssertTrue(status.stdout.contains("transport:     FUSE over io_uring"), status.stdout)
        let json = fx.cmkfs(["status", vol, "--kms-dir", fx.kms, "--json"])
        XCTAssertTrue(json.stdout.contains(#""fuse_transport" : "io_uring""#), json.stdout)
        let cpus = ProcessInfo.processInfo.activeProcessorCount
        XCTAssertGreaterThanOrEqual(Int(metric("cmkfs_fuse_ring_threads")), cpus * 4, "four ring threads per CPU queue")
    }

    /// Each ring thread carries its queue's number in its kernel name (`ps -L`, `top -H`,
    /// /proc/PID/task/TID/comm), so a thread's CPU time and the CPU it ran on can be told per
    /// queue: four `cmkfs-ring-N` per CPU queue N.
    func testEveryRingThreadIsNamedByItsQueue() throws {
        let pid = try XCTUnwrap(fx.lockPID(), "mount.lock names the daemon")
        func queuesOfNamedThreads() -> [Int: Int] {
            let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
            var threads: [Int: Int] = [:]
            for tid in tasks {
                guard let comm = try? String(contentsOfFile: "/proc/\(pid)/task/\(tid)/comm", encoding: .utf8),
                      comm.hasPrefix("cmkfs-ring-"),
                      let queue = Int(comm.dropFirst("cmkfs-ring-".count).trimmingCharacters(in: .whitespacesAndNewlines))
                else { continue }
                threads[queue, default: 0] += 1
            }
            return threads
        }
        let cpus = ProcessInfo.processInfo.activeProcessorCount
        waitUntil(deadline: 30) { (0..<cpus).allSatisfy { queuesOfNamedThreads()[$0] == 4 } }
        let threads = queuesOfNamedThreads()
        for queue in 0..<cpus {
            XCTAssertEqual(threads[queue], 4, "four threads named cmkfs-ring-\(queue): \(threads)")
        }
    }

    /// The random-operation stress run (`scripts/stress.py`, every read checked against a
    /// model) over the rings, with the fixed seed and a random one, then a remount and a
    /// re-check of every file.
    func testStressOverTheRingThenRemount() throws {
        let randomSeed = Int.random(in: 1..<Int(Int32.max))
        print("[cmkfs-it] ring stress seeds: fixed \(StressTests.fixedSeed), random \(randomSeed)")
        let run = { (args: [String]) in
            Shell.run(Shell.python, [StressTests.script, "--mount", self.mnt, "--state", self.plain + "/state"] + args,
                      timeout: 90, logDir: self.fx.logs, label: "stress.py " + args.joined(separator: " "))
        }
        for seed in [StressTests.fixedSeed, randomSeed] {
            let r = run(["--workers", "4", "--seconds", "12", "--seed", "\(seed)", "--hang-seconds", "30"])
            XCTAssertTrue(r.succeeded, "stress seed \(seed) over io_uring (replay with the seed it printed): \(r)")
        }
        try fx.remount()
        let v = run(["--verify"])
        XCTAssertTrue(v.succeeded, "re-verify after the remount: \(v)")
    }

    /// Requests and replies larger than a page (1 MiB writes and reads, a 200-entry directory,
    /// long names) cross the ring's payload buffer intact, and everything survives a remount.
    func testBigTransfersAndListingsCrossTheRingIntact() throws {
        sh("""
        head -c 5000000 /dev/urandom > \(plain)/big
        dd if=\(plain)/big of=\(mnt)/big bs=1M status=none
        mkdir \(mnt)/many
        for i in $(seq 1 200); do echo $i > \(mnt)/many/file-with-a-rather-long-name-$i; done
        """)
        let before = metric(#"cmkfs_fuse_requests_total{transport="io_uring"}"#)
        XCTAssertEqual(sh("cmp \(plain)/big \(mnt)/big && echo same"), "same\n")
        XCTAssertEqual(sh("dd if=\(mnt)/big bs=1M status=none | sha256sum | cut -c1-64"),
                       sh("sha256sum < \(plain)/big | cut -c1-64"))
        XCTAssertEqual(sh("ls \(mnt)/many | wc -l"), "200\n")
        XCTAssertGreaterThan(metric(#"cmkfs_fuse_requests_total{transport="io_uring"}"#), before)
        try fx.remount()
        XCTAssertEqual(sh("cmp \(plain)/big \(mnt)/big && echo same"), "same\n")
        XCTAssertEqual(sh("cat \(mnt)/many/file-with-a-rather-long-name-137"), "137\n")
    }

    /// The kill switch over the rings: `key revoke` refuses the next open with EACCES, an open
    /// handle is cut off, and `key enable` brings access back.
    func testRevokeCutsAccessOverTheRing() throws {
        sh("echo secret > \(mnt)/f")
        XCTAssertEqual(sh("cat \(mnt)/f"), "secret\n")
        XCTAssertTrue(fx.cmkfs(["key", "revoke", vol, "--kms-dir", fx.kms, "--reason", "ring test"]).succeeded)
        let refused = fx.sh("cat \(mnt)/f")
        XCTAssertFalse(refused.succeeded)
        XCTAssertTrue(refused.stderr.contains("Permission denied"), "\(refused)")
        XCTAssertTrue(fx.cmkfs(["key", "enable", vol, "--kms-dir", fx.kms]).succeeded)
        XCTAssertEqual(sh("cat \(mnt)/f"), "secret\n")
    }

    /// A daemon stopped by SIGTERM while its rings wait stops its ring threads and unmounts.
    func testSIGTERMStopsTheRingsAndUnmounts() throws {
        sh("echo x > \(mnt)/f")
        guard let pid = fx.lockPID() else { return XCTFail("no mount pid") }
        kill(pid, SIGTERM)
        let gone = waitUntil(deadline: 20) { kill(pid, 0) != 0 }
        XCTAssertTrue(gone, "the daemon exits on SIGTERM with its rings running")
        XCTAssertTrue(waitUntil(deadline: 10) { !self.fx.isMounted(self.mnt) }, "and its mount is gone")
    }

    /// `--fuse-transport io_uring` on a kernel that does not offer it is refused before anything
    /// is mounted, naming the switch; `auto` mounts over /dev/fuse and `status` says why.
    func testAKernelWithoutTheRingRefusesIOURingAndAutoFallsBack() throws {
        try fx.unmount()
        try KernelRingSwitch.set("N")
        let refused = fx.cmkfs(["mount", vol, mnt, "--kms-dir", fx.kms, "--fuse-transport", "io_uring"])
        XCTAssertFalse(refused.succeeded)
        XCTAssertTrue(refused.stderr.contains("cannot serve over io_uring") && refused.stderr.contains("enable_uring"), refused.stderr)
        XCTAssertFalse(fx.isMounted(mnt), "nothing is mounted")
        let auto = fx.cmkfs(["mount", vol, mnt, "--kms-dir", fx.kms, "-o", "fuse_transport=auto"])
        XCTAssertTrue(auto.succeeded, "\(auto)")
        sh("echo y > \(mnt)/g")
        let status = fx.cmkfs(["status", vol, "--kms-dir", fx.kms])
        XCTAssertTrue(status.stdout.contains("transport:     /dev/fuse (io_uring not used: the kernel's FUSE over io_uring is switched off"), status.stdout)
        XCTAssertEqual(metric(#"cmkfs_fuse_requests_total{transport="io_uring"}"#), 0)
        // The base class checks that ring requests were served; this mount has none by design.
        try fx.unmount()
        try KernelRingSwitch.set("Y")
        try fx.mount()
        sh("cat \(mnt)/g")
    }
}
