import Foundation
import XCTest

/// The harness itself: a command stuck on a hung daemon is killed at its timeout, so a hang
/// fails one test instead of freezing the suite.
final class HarnessTests: IntegrationTestCase {
    func testCommandOnAHungDaemonIsKilledAtItsTimeout() throws {
        sh("echo alive > \(mnt)/f")
        let pid = try XCTUnwrap(fx.lockPID())
        XCTAssertTrue(MountFixture.isCmkfsDaemon(pid, volume: vol))
        XCTAssertEqual(kill(pid, SIGSTOP), 0)
        defer { kill(pid, SIGCONT) }
        let stuck = fx.sh("cat \(mnt)/f; ls \(mnt)", timeout: 2)
        XCTAssertTrue(stuck.timedOut, "\(stuck)")
        XCTAssertLessThan(stuck.seconds, 15, "\(stuck)")
        XCTAssertEqual(kill(pid, SIGCONT), 0)
        // The daemon serves again once it runs.
        XCTAssertEqual(sh("cat \(mnt)/f", timeout: 30), "alive\n")
        // And the harness reports ordinary failures and timeouts apart.
        let plainFailure = fx.sh("exit 3")
        XCTAssertEqual(plainFailure.status, 3)
        XCTAssertFalse(plainFailure.timedOut)
    }
}
