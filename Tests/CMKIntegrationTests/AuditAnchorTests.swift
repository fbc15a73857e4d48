import Foundation
import XCTest

/// The audit log against the volume's own root (issue 17, items 1, 2, 3, 11, 12), on real mounts
/// with the embedded KMS: a cut or deleted log is a chained gap at the next mount, the anchor in
/// the keystore names a log cut together with its checkpoint, a forged pending denial is not
/// chained, a damaged audit key row is named, and no name is in clear under the volume.
final class AuditAnchorTests: IntegrationTestCase {
    func verify() -> ShellResult { fx.cmkfs(["audit", "verify", vol, "--kms-dir", fx.kms]) }

    var volumeID: String {
        let config = (try? String(contentsOfFile: vol + "/cmkfs.volume", encoding: .utf8)) ?? ""
        let match = config.range(of: #""volume_id" : "[0-9a-f]{32}""#, options: .regularExpression).map { String(config[$0]) } ?? ""
        return String(match.dropLast().suffix(32))
    }

    /// Keeps the first `keep` lines of the newest segment, as root would (chattr -a first).
    func cutNewestSegment(keep: Int) throws {
        let segments = try FileManager.default.contentsOfDirectory(atPath: vol + "/audit").filter { $0.hasPrefix("audit-") }.sorted()
        let path = vol + "/audit/" + (try XCTUnwrap(segments.last))
        sh("chattr -a \(path)")
        let lines = try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").prefix(keep)
        try (lines.joined(separator: "\n") + "\n").write(toFile: path, atomically: false, encoding: .utf8)
    }

    func sql(_ statement: String) {
        py("import sqlite3, sys\nc = sqlite3.connect(sys.argv[1]); c.execute(sys.argv[2]); c.commit()", [vol + "/meta.db", statement])
    }

    /// Item 1: cut the newest records, mount and unmount once: verify must not say intact, and
    /// the hole stays named after further mounts.
    func testCutTailThenOneMountIsAGapNotARebase() throws {
        sh("echo x > \(mnt)/a && cat \(mnt)/a > /dev/null && cat \(mnt)/a > /dev/null")
        try fx.unmount()
        XCTAssertTrue(verify().succeeded)
        try cutNewestSegment(keep: 3)
        try fx.mount()
        XCTAssertTrue(fx.mountLog().contains("audit: records are missing, recorded as an audit-gap: the log ended at seq 3"), fx.mountLog())
        sh("cat \(mnt)/a > /dev/null")
        try fx.unmount()
        var r = verify()
        XCTAssertEqual(r.status, 12, "\(r)")
        XCTAssertTrue(r.stderr.contains("gap: record seq") && r.stderr.contains("are missing"), r.stderr)
        try fx.mount()
        try fx.unmount()
        r = verify()
        XCTAssertEqual(r.status, 12, "ever after: \(r)")
    }

    /// Item 1: the whole audit/ directory deleted, then one mount.
    func testDeletedAuditDirectoryThenOneMountIsAGap() throws {
        sh("echo x > \(mnt)/a && cat \(mnt)/a > /dev/null")
        try fx.unmount()
        sh("chattr -R -a \(vol)/audit && rm -rf \(vol)/audit")
        try fx.mount()
        try fx.unmount()
        let r = verify()
        XCTAssertEqual(r.status, 12, "\(r)")
        XCTAssertTrue(r.stderr.contains("gap:") && r.stderr.contains("records 1…"), r.stderr)
    }

    /// Item 2: the checkpoint row deleted and the tail cut, no mount in between: the anchor in
    /// the keystore directory (outside the volume, MACed) names the cut.
    func testCheckpointDeletedAndTailCutIsNamedByTheKeystoreAnchor() throws {
        sh("echo x > \(mnt)/a && cat \(mnt)/a > /dev/null")
        try fx.unmount()
        let anchorFile = fx.kms + "/audit-anchors/\(volumeID).anchor"
        XCTAssertTrue(FileManager.default.fileExists(atPath: anchorFile), "no anchor at \(anchorFile)")
        let ok = verify()
        XCTAssertTrue(ok.succeeded && ok.stdout.contains("anchor in the keystore directory \(fx.kms) at seq"), "\(ok)")
        try cutNewestSegment(keep: 2)
        sql("DELETE FROM meta WHERE key = 'audit_checkpoint'")
        let r = verify()
        XCTAssertEqual(r.status, 12, "\(r)")
        XCTAssertTrue(r.stderr.contains("behind-anchor:") && r.stderr.contains("the anchor in the keystore directory"), r.stderr)
    }

    /// Item 3: a fake `revoke` by uid 1001 written into denials.pending is not chained as cmkfs's.
    func testForgedPendingDenialIsNotChainedAtTheNextMount() throws {
        try fx.unmount()
        let forged = #"{"event":"revoke","result":"ok","time":"2026-12-01T00:00:00.000000Z","uid":1001,"gid":1001,"detail":"forged by root"}"#
        try (forged + "\n").write(toFile: vol + "/audit/denials.pending", atomically: false, encoding: .utf8)
        try fx.mount()
        try fx.unmount()
        let revokes = fx.cmkfs(["audit", "show", vol, "--event", "revoke", "--json"])
        XCTAssertTrue(revokes.succeeded, "\(revokes)")
        XCTAssertFalse(revokes.stdout.contains("1001") || revokes.stdout.contains("forged"), revokes.stdout)
        let rejected = fx.cmkfs(["audit", "show", vol, "--event", "pending-denials-rejected"])
        XCTAssertTrue(rejected.stdout.contains("1 line(s) of denials.pending were not chained"), "\(rejected)")
        XCTAssertTrue(verify().succeeded)
    }

    /// Item 11: a damaged audit_key row is named as such, not blamed on the keystore, and
    /// `status` says so too.
    func testDamagedAuditKeyRowIsNamedNotTheKeystore() throws {
        try fx.unmount()
        sql("UPDATE meta SET value = zeroblob(length(value)) WHERE key = 'audit_key'")
        let r = verify()
        XCTAssertNotEqual(r.status, 0, "\(r)")
        XCTAssertTrue(r.stderr.contains("meta['audit_key']") && r.stderr.contains("the row is damaged or was replaced"), r.stderr)
        XCTAssertFalse(r.stderr.contains("restore the original keystore"), r.stderr)
        let s = fx.cmkfs(["status", vol, "--kms-dir", fx.kms])
        XCTAssertTrue(s.stdout.contains("key check:     ok"), "\(s)")
        XCTAssertTrue(s.stdout.contains("audit key:     the audit key row meta['audit_key']"), "\(s)")
    }

    /// Item 12: no name in clear anywhere under the volume, yet `audit show`/`export` give the
    /// paths to whoever unwraps the audit key, and verify works on the sealed records.
    func testNoNameInClearUnderTheVolumeAndShowOpensThePaths() throws {
        sh("mkdir \(mnt)/platypus-dir && echo s > \(mnt)/platypus-dir/zebra-quokka.txt && cat \(mnt)/platypus-dir/zebra-quokka.txt > /dev/null")
        try fx.unmount()
        let grep = fx.sh("grep -r -a -l -e zebra-quokka -e platypus-dir \(vol)")
        XCTAssertEqual(grep.status, 1, "a name in clear under the volume: \(grep)")
        let show = fx.cmkfs(["audit", "show", vol, "--file", "/platypus-dir/zebra-quokka.txt"])
        XCTAssertTrue(show.succeeded && show.stdout.contains(" create ok /platypus-dir/zebra-quokka.txt")
                      && show.stdout.contains(" open ok /platypus-dir/zebra-quokka.txt"), "\(show)")
        let export = fx.cmkfs(["audit", "export", vol, "--event", "create"])
        XCTAssertTrue(export.stdout.contains(#""path":"/platypus-dir/zebra-quokka.txt","path_sealed":""#), "\(export)")
        let sealed = fx.cmkfs(["audit", "export", vol, "--sealed"])
        XCTAssertTrue(sealed.succeeded && !sealed.stdout.contains("zebra-quokka"), "\(sealed)")
        XCTAssertTrue(verify().succeeded)
    }

    /// Migration: a volume written by a binary from before anchors and sealed paths (record
    /// format 1) verifies with a note saying it is not anchored yet; its first mount anchors it;
    /// old and new records verify together, and `show` reads both.
    func testAVolumeFromBeforeAnchorsIsAnchoredAtItsFirstMountAndKeepsVerifying() throws {
        let name = "format2-names-5956063"
        let home = fx.root + "/old", old = home + "/vol", kms = home + "/kms", oldMnt = home + "/mnt"
        sh("mkdir -p \(oldMnt) && tar -C \(home) --numeric-owner -xpzf \(ReferenceVolumeTests.directory)/\(name).tar.gz")
        fx.adoptVolume(old)
        let before = fx.cmkfs(["audit", "verify", old, "--kms-dir", kms])
        XCTAssertEqual(before.status, 0, "\(before)")
        XCTAssertTrue(before.stdout.contains("note: not anchored yet") && before.stdout.contains("not anchored"), "\(before)")
        try fx.mount(old, at: oldMnt, kmsDir: kms)
        sh("cat \(oldMnt)/blocks.bin > /dev/null")
        try fx.unmount(oldMnt)
        let after = fx.cmkfs(["audit", "verify", old, "--kms-dir", kms])
        XCTAssertEqual(after.status, 0, "\(after)")
        XCTAssertTrue(after.stdout.contains("anchor in the keystore directory \(kms) at seq") && after.stdout.contains("matches"), "\(after)")
        let records = fx.cmkfs(["audit", "show", old, "--kms-dir", kms, "--json"]).stdout
        XCTAssertTrue(records.contains(#""v":1,"#) && records.contains(#""v":2,"#), "old and new records: \(records.prefix(400))")
        let opens = fx.cmkfs(["audit", "show", old, "--kms-dir", kms, "--file", "/blocks.bin", "--event", "open"])
        XCTAssertGreaterThanOrEqual(opens.stdout.split(separator: "\n").count, 2, "a v1 and a v2 open of /blocks.bin: \(opens)")
    }
}
