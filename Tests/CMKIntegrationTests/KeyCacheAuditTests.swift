import Foundation
import XCTest

/// The key cache's own events in a live mount's audit log, under the names docs/audit-format.md
/// gives (`renew`, `flush`, …): the names are part of the tamper-evident log, so they come from
/// the event's case and never from its message text (KeyCacheEventTests pins every case).
final class KeyCacheAuditTests: IntegrationTestCase {
    override var mountsInSetUp: Bool { false }

    func records(_ event: String) throws -> [[String: Any]] {
        try fx.syncAudit()
        let r = fx.cmkfs(["audit", "show", vol, "--json", "--event", event])
        XCTAssertTrue(r.succeeded, "\(r)")
        return try r.stdout.split(separator: "\n").map {
            try XCTUnwrap(JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])
        }
    }

    func testRenewAndFlushAreRecordedUnderTheirNames() throws {
        let m = fx.cmkfs(["mount", vol, mnt, "--kms-dir", fx.kms, "--lease-renew", "300ms"])
        XCTAssertTrue(m.succeeded, "\(m)")
        sh("printf data > \(mnt)/f && cat \(mnt)/f > /dev/null")
        var renewals: [[String: Any]] = []
        XCTAssertTrue(try waitUntil(deadline: 30, interval: 0.2) {
            renewals = try records("renew")
            return !renewals.isEmpty
        }, "no renew record 30 s into a mount renewing every 300 ms")
        XCTAssertEqual(renewals.first?["result"] as? String, "ok")
        XCTAssertTrue((renewals.first?["detail"] as? String)?.hasPrefix("renew: ") == true, "\(renewals)")

        let flush = fx.cmkfs(["cache", "flush", vol])
        XCTAssertTrue(flush.succeeded, "\(flush)")
        let flushes = try records("flush")
        XCTAssertEqual(flushes.count, 1, "\(flushes)")
        XCTAssertEqual(flushes.first?["result"] as? String, "ok")
        let detail = try XCTUnwrap(flushes.first?["detail"] as? String)
        XCTAssertTrue(detail.hasPrefix("flush: 2 data keys dropped ("), detail)
        XCTAssertTrue(fx.mountLog().contains("key event: flush: 2 data keys dropped"), fx.mountLog())
    }
}
