import Foundation
import XCTest

/// Waiting for the system: tests wait on the condition they need, with a deadline, never for a
/// fixed time. The deadlines are generous (a loaded 2-core machine is slow, not wrong); what they
/// catch is a condition that never comes, i.e. a hang or a missing effect.

/// Polls `condition` every `interval` until it holds or `deadline` seconds have passed; returns
/// whether it held. The condition is checked once more at the deadline.
@discardableResult
func waitUntil(deadline seconds: TimeInterval, interval: TimeInterval = 0.02,
               _ condition: () throws -> Bool) rethrows -> Bool {
    let end = Date().addingTimeInterval(seconds)
    while true {
        if try condition() { return true }
        if Date() >= end { return try condition() }
        Thread.sleep(forTimeInterval: interval)
    }
}

/// Waits (≤ `deadline` s) until `pid` is gone or a zombie; returns whether it is.
@discardableResult
func waitForExit(_ pid: pid_t, deadline: TimeInterval = 10) -> Bool {
    waitUntil(deadline: deadline) { !MountFixture.isAlive(pid) }
}

extension MountFixture {
    /// Makes the mount's audit log durable now, through the control socket: an `audit` request
    /// with `durable` (docs/control-protocol.md) appends one `audit-sync` record, fsyncs the log
    /// and saves the checkpoint in meta.db before the mount answers. The durable record also asks
    /// for the audit anchor to follow at the next group commit; for the embedded KMS (`kmsDir`,
    /// the fixture's keystore by default) that is a file in the keystore, so this waits until it
    /// holds the checkpoint's seq. Nothing is then left pending, so the volume and the keystore
    /// stay as they are until the next operation: tests that snapshot them call this first.
    func syncAudit(_ volume: String? = nil, kmsDir: String? = nil) throws {
        let volume = volume ?? vol
        let r = Shell.run(Shell.python, ["-c", Self.controlRequest, volume + "/control.sock",
                                         #"{"op":"audit","event":"audit-sync","reason":"test: sync the audit log","durable":true}"#],
                          timeout: 60, logDir: logs, label: "control request: audit sync")
        guard r.succeeded else { throw FixtureError("the audit sync request failed: \(r)") }
        let checkpoint = sh("sqlite3 \(Shell.quote(volume))/meta.db \"SELECT value FROM meta WHERE key = 'audit_checkpoint'\"").stdout
        guard let seq = checkpoint.split(separator: " ").first(where: { $0.hasPrefix("seq=") }).flatMap({ UInt64($0.dropFirst(4)) }) else {
            throw FixtureError("no audit checkpoint in meta.db after a durable record: \(checkpoint)")
        }
        let anchors = (kmsDir ?? kms) + "/audit-anchors"
        let anchored = waitUntil(deadline: 30) {
            ((try? FileManager.default.contentsOfDirectory(atPath: anchors)) ?? []).contains { name in
                let text = (try? String(contentsOfFile: anchors + "/" + name, encoding: .utf8)) ?? ""
                return UInt64(text.prefix { $0 != "\n" }).map { $0 >= seq } ?? false
            }
        }
        guard anchored else { throw FixtureError("the audit anchor in \(anchors) never reached seq \(seq)") }
    }

    /// Sends one control request (argv[2]) to the socket argv[1], prints the answer, fails
    /// unless it says ok.
    static let controlRequest = """
        import json, socket, sys
        s = socket.socket(socket.AF_UNIX); s.settimeout(50); s.connect(sys.argv[1])
        s.sendall(sys.argv[2].encode() + b"\\n")
        data = b""
        while not data.endswith(b"\\n"):
            chunk = s.recv(65536)
            if not chunk: break
            data += chunk
        print(data.decode().strip())
        sys.exit(0 if json.loads(data).get("ok") else 1)
        """
}
