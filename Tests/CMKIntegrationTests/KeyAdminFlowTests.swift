import Foundation
import XCTest
import CMKAudit
import CMKKeys
import CMKVolume

/// Rotation and purge as the volume layer runs them for `cmkfs key rotate|purge`, with the live
/// mount stood in for by a recorder: what the mount is told, when, and the denied record of a
/// refused purge.
final class KeyAdminFlowTests: IntegrationTestCase {
    override var mountsInSetUp: Bool { false }

    /// A live mount that records what it was told.
    final class RecordingMount: LiveMount {
        var calls: [String] = []
        func relabel() throws(CMKError) { calls.append("relabel") }
        func flush(_ key: KeyRef, reason: String) throws(CMKError) { calls.append("flush \(key.version): \(reason)") }
    }

    func testRotateRelabelsAndPurgeRecordsARefusalThenFlushesTheVersion() throws {
        let admin = try KeyAdmin.open(at: vol, kmsDir: fx.kms)
        let mount = RecordingMount()
        var events: [AuditEvent] = []
        let audit: AuditRecorder = { (event, _) throws(CMKError) in events.append(event) }

        let report = try admin.rotate(batchSize: 10, audit: audit, mount: mount)
        XCTAssertEqual(report.target, 2)
        XCTAssertEqual(mount.calls, ["relabel"], "cached DEKs follow their EDEKs to the new version")

        // The active version cannot be purged: a denied record, and the mount is told nothing.
        mount.calls = []
        events = []
        XCTAssertThrowsError(try admin.purge(version: 2, force: false, confirm: { _ in XCTFail("asked to confirm a refused purge") },
                                             audit: audit, mount: mount))
        XCTAssertEqual(events.map(\.event), ["purge"])
        XCTAssertEqual(events.first?.result, "denied")
        XCTAssertEqual(mount.calls, [])

        // A declined confirmation is a refusal too.
        events = []
        XCTAssertThrowsError(try admin.purge(version: 1, force: true, confirm: { _ throws(CMKError) in throw CMKError(.refused, "not confirmed") },
                                             audit: audit, mount: mount))
        XCTAssertEqual(events.map(\.result), ["denied"])
        XCTAssertEqual(mount.calls, [])

        events = []
        var asked: [Int] = []
        let purged = try admin.purge(version: 1, force: false, confirm: { asked.append($0) }, audit: audit, mount: mount)
        XCTAssertEqual(purged.version, 1)
        XCTAssertEqual(asked, [0], "no file is left under version 1 after the rotation")
        XCTAssertEqual(mount.calls, ["relabel", "flush 1: cmkfs key purge --version 1"], "relabel before the destroy, flush after")
        XCTAssertTrue(events.contains { $0.event == "purge" && $0.result == "ok" }, "\(events.map { "\($0.event) \($0.result)" })")
    }
}
