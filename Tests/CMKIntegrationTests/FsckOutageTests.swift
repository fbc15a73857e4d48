import Foundation
import XCTest

/// `cmkfs fsck --repair` against a real `cmkfs-kms` process that fails a share of its requests
/// (`--fail-fraction`, an injected `unavailable` answer): an outage is never taken for a bad
/// file. Healthy files stay where they are, and files the KMS could not answer for are reported
/// with exit 16.
final class FsckOutageTests: SocketKMSTestCase {
    static let fileCount = 22

    func cmkfs(_ arguments: [String], timeout: TimeInterval = 120) -> ShellResult {
        Shell.run("/usr/bin/setsid", ["-w", MountFixture.binary] + arguments, timeout: timeout, logDir: fx.logs,
                  label: "cmkfs " + arguments.joined(separator: " "))
    }

    /// (Re)starts the KMS on the same socket and keystore with `faults`.
    func restartKMS(_ faults: [String]) throws {
        if let problem = kms?.stop() { XCTFail(problem) }
        let k = KMSProcess(socket: fx.root + "/kms.sock", state: fx.root + "/kms-state", logPath: fx.logs + "/kms.log")
        try k.start(faults)
        kms = k
    }

    /// A socket-KMS volume holding `fileCount` healthy files (copies in `plain`), unmounted.
    func makeVolumeWithHealthyFiles() throws {
        try restartKMS([])
        let initialized = cmkfs(["init", pvol, "--kms", "socket", "--kms-socket", kms!.socket])
        guard initialized.succeeded else { throw FixtureError("init failed: \(initialized)") }
        for i in 0..<Self.fileCount { makeRandomFile("\(plain)/f\(i)", size: 5000 + 997 * i) }
        let mounted = cmkfs(["mount", pvol, mnt])
        guard mounted.succeeded else { throw FixtureError("mount failed: \(mounted)") }
        sh("cp \(plain)/* \(mnt)/")
        let unmounted = cmkfs(["unmount", mnt])
        guard unmounted.succeeded else { throw FixtureError("unmount failed: \(unmounted)") }
    }

    /// Entries fsck moved out of `data/`.
    func lostAndFound() -> [String] {
        (try? FileManager.default.contentsOfDirectory(atPath: pvol + "/lost+found")) ?? []
    }

    /// Runs `fsck --repair --json` until a run gets past opening the volume and prints a report
    /// (exit 5 without one: the KMS failed the key check, the name key or the audit key even
    /// after retries, so no file was looked at), at most `tries` times. Returns the last run.
    func repairPastOpen(tries: Int) -> ShellResult {
        var last = cmkfs(["fsck", pvol, "--repair", "--json"], timeout: 300)
        var runs = 1
        while last.stdout.isEmpty && runs < tries {
            XCTAssertTrue(lostAndFound().isEmpty, "a run that stopped at the open moved files: \(last)")
            last = cmkfs(["fsck", pvol, "--repair", "--json"], timeout: 300)
            runs += 1
        }
        print("[cmkfs-it] fsck --repair got past the open after \(runs) runs: exit \(last.status)")
        return last
    }

    /// Every file is still in place and reads back as written, through a mount on a healthy KMS.
    func assertFilesIntact(file: StaticString = #filePath, line: UInt = #line) throws {
        try restartKMS([])
        let mounted = cmkfs(["mount", pvol, mnt])
        guard mounted.succeeded else { throw FixtureError("mount failed: \(mounted)") }
        XCTAssertEqual(manifest(mnt), manifest(plain), file: file, line: line)
        let unmounted = cmkfs(["unmount", mnt])
        XCTAssertTrue(unmounted.succeeded, "\(unmounted)", file: file, line: line)
        let check = cmkfs(["fsck", pvol, "--json"], timeout: 300)
        XCTAssertEqual(check.status, 0, "\(check)", file: file, line: line)
    }

    /// The case: `fsck --repair` while the KMS fails half its requests moved 12 of 22
    /// healthy files to lost+found and exited 0. Now: none moves; every file is either checked
    /// (the retries got through) or reported as not checked with exit 16.
    func testRepairWhileTheKMSFailsHalfItsRequestsMovesNoHealthyFile() throws {
        try makeVolumeWithHealthyFiles()
        try restartKMS(["--fail-fraction", "0.5"])
        let r = repairPastOpen(tries: 40)
        let moved = lostAndFound()
        print("[cmkfs-it] fsck --repair under a 50%-failing KMS: \(moved.count) of \(Self.fileCount) healthy files moved, exit \(r.status)")
        XCTAssertEqual(moved, [], "\(r)")
        XCTAssertTrue([0, 16].contains(r.status), "\(r)")
        let report = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any], "\(r)")
        let problems = (report["problems"] as? [[String: Any]]) ?? []
        XCTAssertTrue(problems.allSatisfy { $0["kind"] as? String == "not-checked" && $0["repaired"] as? Bool == false }, "\(r)")
        let files = problems.filter { $0["file_id"] is String }.count
        XCTAssertEqual(report["not_checked"] as? Int, files, "\(r)")
        if r.status == 16 {
            XCTAssertTrue(r.stderr.contains("could not check \(files) files") && r.stderr.contains(": provider unavailable"), "\(r)")
        }
        try assertFilesIntact()
    }

    /// A KMS that fails most requests: the retries cannot get an answer for every file, so some
    /// are reported as not checked, with their own exit code, and none is touched.
    func testFilesTheKMSCouldNotAnswerForAreReportedWithExit16() throws {
        try makeVolumeWithHealthyFiles()
        try restartKMS(["--fail-fraction", "0.8"])
        let r = repairPastOpen(tries: 60)
        XCTAssertEqual(r.status, 16, "\(r)")
        let report = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any], "\(r)")
        let notChecked = try XCTUnwrap(report["not_checked"] as? Int, "\(r)")
        print("[cmkfs-it] fsck --repair under an 80%-failing KMS: \(notChecked) of \(Self.fileCount) files not checked, \(lostAndFound().count) moved")
        XCTAssertGreaterThan(notChecked, 0)
        XCTAssertTrue(r.stderr.contains("could not check \(notChecked) files") && r.stderr.contains(": provider unavailable"), "\(r)")
        XCTAssertEqual(lostAndFound(), [], "\(r)")
        try assertFilesIntact()
        // The run is on the record, with the outcome.
        let show = cmkfs(["audit", "show", pvol, "--event", "fsck"])
        XCTAssertTrue(show.stdout.contains("fsck error") && show.stdout.contains("remaining"), "\(show)")
    }
}
