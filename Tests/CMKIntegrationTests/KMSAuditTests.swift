import Foundation
import XCTest

/// The key owner's own record of every key use: `cmkfs-kms serve` logs each request it answers
/// with who asked (the FUSE caller), what for, from where and why (`--kms-reason`), and the
/// request id that cmkfs' audit record of the same use carries, so the two logs join.
final class KMSAuditTests: SocketKMSTestCase {
    func cmkfs(_ arguments: [String]) -> ShellResult {
        Shell.run("/usr/bin/setsid", ["-w", MountFixture.binary] + arguments, timeout: 60, logDir: fx.logs,
                  label: "cmkfs " + arguments.joined(separator: " "))
    }

    func startKMS(_ flags: [String] = []) throws -> KMSProcess {
        let k = KMSProcess(socket: fx.root + "/kms.sock", state: fx.root + "/kms-state", logPath: fx.logs + "/kms.log")
        try k.start(flags)
        kms = k
        return k
    }

    func mountRecords(_ args: [String]) throws -> [[String: Any]] {
        let r = cmkfs(["audit", "show", pvol, "--json"] + args)
        guard r.succeeded else { throw FixtureError("cmkfs audit show failed: \(r)") }
        return try r.stdout.split(separator: "\n").map { try XCTUnwrap(JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]) }
    }

    func testEveryKeyUseIsInTheKMSLogWithItsCallerAndJoinsTheMountsRecord() throws {
        let k = try startKMS()
        XCTAssertTrue(cmkfs(["init", pvol, "--kms", "socket", "--kms-socket", k.socket]).succeeded)
        let reason = "ticket OPS-1234: \"nightly\" backup"
        var r = cmkfs(["mount", pvol, mnt, "--kms-reason", reason])
        XCTAssertTrue(r.succeeded, "\(r)")
        sh("echo secret > \(mnt)/f && chmod 644 \(mnt)/f")
        XCTAssertTrue(cmkfs(["unmount", mnt]).succeeded)
        r = cmkfs(["mount", pvol, mnt, "-o", "kms_reason=second mount"])
        XCTAssertTrue(r.succeeded, "\(r)")
        let pid = sh("runuser -u nobody -- sh -c 'echo $$; exec cat \(mnt)/f > /dev/null'").trimmingCharacters(in: .whitespacesAndNewlines)
        XCTAssertTrue(cmkfs(["unmount", mnt]).succeeded)

        // The open that missed the cache: one unwrap in the KMS's log under the same id.
        let open = try XCTUnwrap(try mountRecords(["--file", "/f", "--event", "open"]).first(where: { $0["cache"] as? String == "miss" }))
        let openID = try XCTUnwrap(open["kms_request"] as? String, "\(open)")
        let unwraps = try k.auditRecords(["--request", openID], logDir: fx.logs)
        XCTAssertEqual(unwraps.count, 1, "\(unwraps)")
        let u = try XCTUnwrap(unwraps.first)
        XCTAssertEqual(u["kms_op"] as? String, "unwrap")
        XCTAssertEqual(u["operation"] as? String, "open")
        XCTAssertEqual(u["uid"] as? Int, 65534)
        XCTAssertEqual((u["pid"] as? Int).map(String.init), pid)
        XCTAssertEqual(u["process"] as? String, "cat")
        XCTAssertEqual(u["reason"] as? String, "second mount")
        XCTAssertEqual(u["host"] as? String, open["host"] as? String)
        XCTAssertEqual(u["result"] as? String, "ok")
        XCTAssertEqual(u["volume"] as? String, open["volume"] as? String)
        XCTAssertEqual(u["file"] as? String, open["file"] as? String)
        XCTAssertEqual(u["key"] as? String, open["key"] as? String)
        XCTAssertEqual(u["peer_uid"] as? Int, 0, "the mount daemon, as the kernel vouches for it")

        // The file's creation: one wrap under the create record's id, with the first reason.
        let create = try XCTUnwrap(try mountRecords(["--file", "/f", "--event", "create"]).first)
        let createID = try XCTUnwrap(create["kms_request"] as? String)
        let wraps = try k.auditRecords(["--request", createID], logDir: fx.logs)
        XCTAssertEqual(wraps.map { $0["kms_op"] as? String }, ["wrap"])
        XCTAssertEqual(wraps.first?["reason"] as? String, reason)
        XCTAssertEqual(wraps.first?["operation"] as? String, "create")

        // The mount's own key uses (key check, audit and name keys) are there too, by volume.
        let byVolume = try k.auditRecords(["--volume", try XCTUnwrap(open["volume"] as? String)], logDir: fx.logs)
        XCTAssertTrue(byVolume.contains { $0["operation"] as? String == "mount" && $0["kms_op"] as? String == "unwrap" }, "\(byVolume)")
        // The human form names the caller and the reason.
        let text = Shell.run(KMSProcess.binary, ["audit", "show", "--state", k.state, "--request", openID], timeout: 30, logDir: fx.logs)
        XCTAssertTrue(text.stdout.contains("unwrap ok") && text.stdout.contains("(cat)") && text.stdout.contains("reason: second mount"), "\(text)")
        XCTAssertEqual(Shell.run(KMSProcess.binary, ["audit", "show", "--state", k.state, "--since", "yesterday"], timeout: 30, logDir: fx.logs).status, 64)
    }

    /// A refusal is in both logs under one id: the customer sees the use they cut off.
    func testADisabledKeysRefusalIsRecordedOnBothSides() throws {
        let k = try startKMS()
        XCTAssertTrue(cmkfs(["init", pvol, "--kms", "socket", "--kms-socket", k.socket]).succeeded)
        XCTAssertTrue(cmkfs(["mount", pvol, mnt]).succeeded)
        sh("echo secret > \(mnt)/b")
        XCTAssertTrue(cmkfs(["unmount", mnt]).succeeded)
        XCTAssertTrue(cmkfs(["mount", pvol, mnt]).succeeded)
        let keyID = try XCTUnwrap(k.keyCommand(["list"], logDir: fx.logs).stdout.split(separator: " ").first.map(String.init))
        XCTAssertTrue(k.keyCommand(["disable", keyID], logDir: fx.logs).succeeded)
        XCTAssertTrue(fx.sh("cat \(mnt)/b").stderr.contains("Permission denied"))
        XCTAssertTrue(cmkfs(["unmount", mnt]).succeeded)
        XCTAssertTrue(k.keyCommand(["enable", keyID], logDir: fx.logs).succeeded)
        let denied = try XCTUnwrap(try mountRecords(["--file", "/b", "--event", "open"]).first(where: { $0["result"] as? String == "denied" }))
        let id = try XCTUnwrap(denied["kms_request"] as? String, "\(denied)")
        let theirs = try k.auditRecords(["--request", id], logDir: fx.logs)
        XCTAssertEqual(theirs.map { $0["result"] as? String }, ["denied"], "\(theirs)")
        XCTAssertEqual(theirs.first?["status"] as? String, "key_disabled")
        XCTAssertEqual(try k.auditRecords(["--result", "denied"], logDir: fx.logs).count, 1)
    }

    /// A request is answered only once its record is on disk: when the log cannot be written,
    /// the KMS refuses instead of answering unrecorded.
    func testAKMSThatCannotRecordRefuses() throws {
        let k = try startKMS()
        XCTAssertTrue(cmkfs(["init", pvol, "--kms", "socket", "--kms-socket", k.socket]).succeeded)
        _ = k.stop()
        // /dev/full: every write fails with ENOSPC.
        try k.start(["--audit-log", "/dev/full"])
        let r = cmkfs(["mount", pvol, mnt])
        XCTAssertEqual(r.status, 5, "\(r)")
        XCTAssertTrue(r.stderr.contains("cannot record the request in its audit log"), "\(r)")
        XCTAssertFalse(fx.isMounted(mnt))
    }
}
