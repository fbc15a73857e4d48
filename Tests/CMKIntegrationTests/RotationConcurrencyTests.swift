import Foundation
import XCTest

/// Rotation against a KMS that takes milliseconds per request keeps many requests in flight:
/// its rate is bounded by the KMS's latency divided by the requests in flight, not by the
/// number of processors here.
final class RotationConcurrencyTests: SocketKMSTestCase {
    func testRotationAgainstASlowKMSKeepsManyRequestsInFlight() throws {
        let latency = 5.0
        let k = KMSProcess(socket: fx.root + "/kms.sock", state: fx.root + "/kms-state", logPath: fx.logs + "/kms.log")
        try k.start(["--latency-ms", String(Int(latency))])
        kms = k
        func cmkfs(_ arguments: [String]) -> ShellResult {
            Shell.run("/usr/bin/setsid", ["-w", MountFixture.binary] + arguments, timeout: 300, logDir: fx.logs)
        }
        XCTAssertTrue(cmkfs(["init", pvol, "--kms", "socket", "--kms-socket", k.socket]).succeeded)
        XCTAssertTrue(cmkfs(["mount", pvol, mnt]).succeeded)
        let files = 1000
        sh("python3 -c 'import os\nfor i in range(\(files)): os.close(os.open(\"\(mnt)/f%d\" % i, os.O_CREAT | os.O_WRONLY, 0o644))'",
           timeout: 300)
        XCTAssertTrue(cmkfs(["unmount", mnt]).succeeded)
        let r = cmkfs(["key", "rotate", pvol, "--json"])
        XCTAssertTrue(r.succeeded, "\(r)")
        let report = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        XCTAssertEqual(report["rewrapped"] as? Int, files + 0)
        let rate = try XCTUnwrap(report["per_second"] as? Double)
        // One EDEK costs two requests of `latency` ms each. With one request in flight per
        // processor (what concurrentPerform gave) the rate could not pass this bound; twice it
        // needs at least 2 × processors requests in flight.
        let processors = Double(ProcessInfo.processInfo.activeProcessorCount)
        let perProcessorBound = processors * 1000 / (2 * latency)
        print("[cmkfs-it] rotation at \(latency) ms per KMS request: \(Int(rate)) EDEK/s (one in flight per processor: at most \(Int(perProcessorBound)))")
        XCTAssertGreaterThan(rate, 2 * perProcessorBound)
    }
}
