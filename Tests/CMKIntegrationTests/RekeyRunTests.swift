import Foundation
import XCTest
import CMKAudit
import CMKFormat
import CMKVolume

/// `Volume.rekeyFiles`, the rekey run the CLI calls, driven directly: the resume cursor, the
/// run's audit records and the offline route live in the volume layer, not in the command.
final class RekeyRunTests: IntegrationTestCase {
    func testAnInterruptedRunResumesAfterItsLastFile() throws {
        sh("mkdir \(mnt)/d && for f in a b c; do echo $f > \(mnt)/d/$f; done && echo x > \(mnt)/top")
        try fx.unmount()
        let v = try Volume.open(at: vol, kmsDir: fx.kms, purpose: "rekey")
        defer { v.metadata.close() }
        var events: [AuditEvent] = []
        var routed: [String] = []
        let viaMount = RekeyRoute.mount { path in routed.append(path); return nil }
        // The run's last record cannot be written: the run stops with its cursor saved.
        let failingAtTheEnd: AuditRecorder = { (event, _) throws(CMKError) in
            events.append(event)
            if event.event == "rekey-run", event.detail?.hasPrefix("finished") == true { throw CMKError(.io, "audit log gone") }
        }
        XCTAssertThrowsError(try v.rekeyFiles(selection: [], route: viaMount, audit: failingAtTheEnd))
        XCTAssertEqual(routed, ["/d/a", "/d/b", "/d/c", "/top"], "every file once, bytewise order")
        XCTAssertNotNil(try v.metadata.meta("rekey_run"), "the cursor outlives the interrupted run")

        events = []
        let recording: AuditRecorder = { (event, _) throws(CMKError) in events.append(event) }
        let resumed = try v.rekeyFiles(selection: [], route: viaMount, audit: recording)
        XCTAssertTrue(resumed.resumed)
        XCTAssertEqual(resumed.rekeyed, 4, "the files done before count")
        XCTAssertEqual(routed.count, 4, "nothing after the last file done is redone")
        let runRecords = events.filter { $0.event == "rekey-run" }
        XCTAssertEqual(runRecords.map(\.detail), ["resumed: 4 done before, 0 files to rekey", "finished: 4 files rekeyed"])
        XCTAssertNil(try v.metadata.meta("rekey_run"), "a finished run leaves no cursor")

        // Offline, another selection: a fresh run that rekeys each file itself and records it.
        events = []
        let before = try ["a", "b", "c"].map { try fileKeyRow("d/" + $0, v) }
        let offline = try v.rekeyFiles(selection: ["/d"], route: .offline, audit: recording)
        XCTAssertFalse(offline.resumed)
        XCTAssertEqual(offline.rekeyed, 3)
        XCTAssertTrue(offline.failed.isEmpty, "\(offline.failed)")
        let after = try ["a", "b", "c"].map { try fileKeyRow("d/" + $0, v) }
        for (old, new) in zip(before, after) { XCTAssertNotEqual(old, new, "a file kept its EDEK") }
        XCTAssertEqual(events.filter { $0.event == "rekey" }.map(\.path), ["/d/a", "/d/b", "/d/c"])
        XCTAssertTrue(events.filter { $0.event == "rekey" }.allSatisfy { $0.cache == "new" && $0.result == "ok" })
        try fx.mount()
        XCTAssertEqual(sh("cat \(mnt)/d/a \(mnt)/d/b \(mnt)/d/c \(mnt)/top"), "a\nb\nc\nx\n")
    }

    /// The EDEK row of the file at mount path `name`, read through the volume's metadata.
    private func fileKeyRow(_ name: String, _ v: Volume) throws -> [UInt8]? {
        let backing = try v.backingPath(forMountPath: "/" + name)
        let fd = open(v.dataPath + "/" + backing, O_RDONLY)
        guard fd >= 0 else { throw CMKError(.io, "open \(name)") }
        defer { close(fd) }
        return try v.metadata.fileKey(fileID: try ContentFile.readFileID(fd: fd).bytes)?.edek
    }
}
