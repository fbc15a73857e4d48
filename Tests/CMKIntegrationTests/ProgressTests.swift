import Foundation
import XCTest

/// Long commands (`key rotate`, `rekey`, `fsck`) tell how far they are on stderr — rate and ETA
/// on a terminal, a plain line every few seconds elsewhere — and print JSON only with --json.
final class ProgressTests: IntegrationTestCase {
    /// Makes `count` files and unmounts (the offline paths run without a mount in the way).
    func populateAndUnmount(_ count: Int) throws {
        sh("for i in $(seq \(count)); do echo \"file $i\" > \(mnt)/f$i; done")
        try fx.unmount()
    }

    /// `cmkfs ARGS` with stdout and stderr apart (neither a terminal), progress lines at once.
    func run(_ arguments: [String]) -> ShellResult {
        fx.sh("CMKFS_PROGRESS_INTERVAL=0 " + ([MountFixture.binary] + arguments).map(Shell.quote).joined(separator: " "), timeout: 120)
    }

    func testWithoutATerminalProgressGoesToStderrAndTheSummaryIsTextUnlessJSON() throws {
        try populateAndUnmount(30)
        let rekey = run(["rekey", vol, "--kms-dir", fx.kms])
        XCTAssertTrue(rekey.succeeded, "\(rekey)")
        XCTAssertTrue(rekey.stdout.hasPrefix("rekeyed 30 files"), "text, not JSON, without --json: \(rekey)")
        let lines = rekey.stderr.split(separator: "\n")
        XCTAssertTrue(lines.contains { $0.wholeMatch(of: /cmkfs: rekeying: \d+\/30 files \(\d+%\), \d+\/s, ETA (\d+s|\d+m\d+s|\?)/) != nil },
                      "no progress line on stderr: \(rekey)")
        XCTAssertTrue(lines.last?.hasPrefix("cmkfs: rekeying: 30/30 files, done in ") == true, "no closing line: \(rekey)")

        let rotate = run(["key", "rotate", vol, "--kms-dir", fx.kms])
        XCTAssertTrue(rotate.succeeded, "\(rotate)")
        XCTAssertTrue(rotate.stdout.hasPrefix("rotated: version 2"), "\(rotate)")
        XCTAssertTrue(rotate.stderr.contains("cmkfs: re-wrapping: "), "\(rotate)")
        let json = run(["key", "rotate", vol, "--kms-dir", fx.kms, "--json"])
        XCTAssertTrue(json.succeeded, "\(json)")
        let summary = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any], json.stdout)
        XCTAssertEqual(summary["format"] as? Int, 1)

        let fsck = run(["fsck", vol, "--kms-dir", fx.kms])
        XCTAssertTrue(fsck.succeeded, "\(fsck)")
        XCTAssertTrue(fsck.stderr.contains("cmkfs: checking: "), "\(fsck)")

        // At the default interval a short run says nothing on stderr.
        let quiet = fx.cmkfs(["rekey", vol, "--kms-dir", fx.kms])
        XCTAssertTrue(quiet.succeeded, "\(quiet)")
        XCTAssertFalse(quiet.stderr.contains("rekeying"), "\(quiet)")
        try fx.mount()
    }

    func testOnATerminalProgressShowsRateAndETA() throws {
        try populateAndUnmount(30)
        // script(1) gives the command a pseudo-terminal for stdout and stderr.
        let command = ([MountFixture.binary, "rekey", vol, "--kms-dir", fx.kms]).map(Shell.quote).joined(separator: " ")
        let r = fx.sh("script -qefc \(Shell.quote(command)) /dev/null", timeout: 120)
        XCTAssertTrue(r.succeeded, "\(r)")
        XCTAssertNotNil(r.stdout.firstMatch(of: /rekeying \[#+-*\] \d+\/30 files \d+\/s, ETA/), "no bar with rate and ETA: \(r)")
        XCTAssertTrue(r.stdout.contains("rekeyed 30 files"), "\(r)")
        XCTAssertFalse(r.stdout.contains("\"format\""), "JSON on a terminal: \(r)")
        try fx.mount()
    }
}
