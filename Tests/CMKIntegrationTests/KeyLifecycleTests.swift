import Foundation
import XCTest

/// Master-key rotation and purge on a live mount (embedded KMS; the socket KMS and the HSM are
/// in ProviderMountTests): rotation under concurrent readers and writers, kill -9 and resume,
/// purge refused while a version is needed, forced purge naming exactly the files it kills.
final class KeyLifecycleTests: IntegrationTestCase {
    /// Every file's expected content is a function of its name, so any reader can check any file.
    static let populate = """
        import os, sys
        root, n = sys.argv[1], int(sys.argv[2])
        for d in range(20):
            os.makedirs(f"{root}/d{d}", exist_ok=True)
        for i in range(n):
            with open(f"{root}/d{i % 20}/f{i}", "w") as f:
                f.write(f"{i}:" * (i % 300 + 1))
        """

    static let checkAll = """
        import os, sys
        root, n = sys.argv[1], int(sys.argv[2])
        bad = []
        for i in range(n):
            p = f"{root}/d{i % 20}/f{i}"
            try:
                with open(p) as f:
                    if f.read() != f"{i}:" * (i % 300 + 1): bad.append(p + ": wrong content")
            except OSError as e:
                bad.append(f"{p}: {e.strerror}")
        print("\\n".join(bad[:20]))
        sys.exit(1 if bad else 0)
        """

    /// Reads random files and writes new ones until `stop` exists; prints "ops errors".
    static let churn = """
        import os, random, sys, time
        root, n, stop, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
        ops = errors = 0
        first = ""
        j = 0
        while not os.path.exists(stop):
            i = random.randrange(n)
            try:
                with open(f"{root}/d{i % 20}/f{i}") as f:
                    if f.read() != f"{i}:" * (i % 300 + 1): errors += 1; first = first or f"f{i} wrong"
                p = f"{root}/new-{j}"
                with open(p, "w") as f: f.write(f"new {j}" * 50)
                with open(p) as f:
                    if f.read() != f"new {j}" * 50: errors += 1; first = first or f"{p} wrong"
                j += 1
            except OSError as e:
                errors += 1; first = first or f"{e}"
            ops += 1
            if ops % 10 == 0:
                with open(out + ".tmp", "w") as f: f.write(f"{ops}")
                os.replace(out + ".tmp", out + ".progress")
        with open(out, "w") as f: f.write(f"{ops} {errors} {j} {first}")
        """

    func keyList() throws -> [String: Any] {
        let r = fx.cmkfs(["key", "list", vol, "--kms-dir", fx.kms, "--json"])
        guard r.succeeded, let o = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any] else {
            throw FixtureError("key list failed: \(r)")
        }
        return o
    }

    /// version → (state, edeks)
    func versions() throws -> [Int: (String, Int)] {
        var out: [Int: (String, Int)] = [:]
        for v in (try keyList()["versions"] as? [[String: Any]]) ?? [] {
            out[v["version"] as! Int] = (v["state"] as! String, v["edeks"] as! Int)
        }
        return out
    }

    func rewrappedSoFar() -> Int {
        ((try? keyList())?["rotation_in_progress"] as? [String: Any])?["rewrapped"] as? Int ?? 0
    }

    /// A child process the test owns (not through a shell, so nothing inherits the harness's
    /// pipes); killed in the caller's defer if the test stops early.
    func spawn(_ executable: String, _ arguments: [String], output: String) throws -> Process {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable)
        p.arguments = arguments
        _ = FileManager.default.createFile(atPath: output, contents: nil)
        p.standardOutput = FileHandle(forWritingAtPath: output)
        p.standardError = FileHandle(forWritingAtPath: output + ".err")
        p.standardInput = FileHandle(forReadingAtPath: "/dev/null")
        try p.run()
        return p
    }

    /// Starts `cmkfs key rotate` (throttled so it cannot finish first), waits until it has
    /// committed some batches, and kills it with SIGKILL. Returns how many EDEKs it had re-wrapped.
    func rotateAndKill() throws -> Int {
        let out = fx.logs + "/rotate-bg.out"
        let p = try spawn(MountFixture.binary, ["key", "rotate", vol, "--kms-dir", fx.kms, "--batch-size", "10",
                                                "--max-rate", "400", "--json"], output: out)
        defer { if p.isRunning { kill(p.processIdentifier, SIGKILL) }; p.waitUntilExit() }
        waitUntil(deadline: 60) { rewrappedSoFar() >= 50 || !p.isRunning }
        XCTAssertTrue(p.isRunning, "the rotation ended before it was killed: \((try? String(contentsOfFile: out, encoding: .utf8)) ?? "")")
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        let done = rewrappedSoFar()
        XCTAssertGreaterThan(done, 0, "the rotation never committed a batch")
        return done
    }

    func auditVerifies(file: StaticString = #filePath, line: UInt = #line) {
        let r = fx.cmkfs(["audit", "verify", vol])
        XCTAssertTrue(r.succeeded, "audit verify: \(r)", file: file, line: line)
    }

    func testRotateTenThousandFilesUnderConcurrentReaderAndWriter() throws {
        let n = 10_000
        py(Self.populate, [mnt, String(n)], timeout: 300)
        XCTAssertEqual(try versions()[1]?.1, n)
        let stop = fx.root + "/stop", out = fx.root + "/churn.out"
        let churner = try spawn(Shell.python, ["-c", Self.churn, mnt, String(n), stop, out], output: fx.logs + "/churn.log")
        defer { if churner.isRunning { kill(churner.processIdentifier, SIGKILL) }; churner.waitUntilExit() }
        // The churner's operations so far (it reports every 10): it is busy before the rotation
        // starts and still after it ends, whatever the machine's speed.
        let churned = { Int((try? String(contentsOfFile: out + ".progress", encoding: .utf8)) ?? "") ?? 0 }
        XCTAssertTrue(waitUntil(deadline: 60) { churned() >= 20 || !churner.isRunning }, "the churner never got going")
        let r = fx.cmkfs(["key", "rotate", vol, "--kms-dir", fx.kms, "--batch-size", "100", "--json"], timeout: 300)
        XCTAssertTrue(r.succeeded, "rotate: \(r)")
        let afterRotation = churned()
        XCTAssertTrue(waitUntil(deadline: 60) { churned() >= afterRotation + 20 || !churner.isRunning }, "the churner stalled after the rotation")
        _ = FileManager.default.createFile(atPath: stop, contents: nil)
        waitUntil(deadline: 30, interval: 0.05) { !churner.isRunning }
        let churn = ((try? String(contentsOfFile: out, encoding: .utf8)) ?? "").split(separator: " ", maxSplits: 3).map(String.init)
        XCTAssertEqual(churn.count >= 3 ? churn[1] : "?", "0", "I/O during the rotation: \(churn)")
        let created = Int(churn.count >= 3 ? churn[2] : "0") ?? 0
        XCTAssertGreaterThan(created, 0)
        print("[cmkfs-it] rotation of \(n) files under load: \(r.stdout.replacingOccurrences(of: "\n", with: " ")); churn \(churn.prefix(3))")
        let report = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any]
        XCTAssertEqual(report?["active_version"] as? Int, 2)
        XCTAssertEqual(report?["failed"] as? Int, 0)
        // Every EDEK, including those of the files created during the rotation, is under v2.
        let v = try versions()
        XCTAssertEqual(v[1]?.0, "deactivated")
        XCTAssertEqual(v[1]?.1, 0)
        XCTAssertEqual(v[2]?.0, "active")
        XCTAssertEqual(v[2]?.1, n + created)
        // No application I/O failed, and after a remount every byte is intact.
        try fx.remount()
        py(Self.checkAll, [mnt, String(n)], timeout: 300)
        // Version 1 is drained: it purges without --force, and everything still reads.
        let purge = fx.cmkfs(["key", "purge", vol, "--version", "1", "--kms-dir", fx.kms])
        XCTAssertTrue(purge.succeeded, "purge: \(purge)")
        XCTAssertEqual(try versions()[1]?.0, "purged")
        py(Self.checkAll, [mnt, String(n)], timeout: 300)
        auditVerifies()
        XCTAssertFalse(fx.mountLog().contains("failed"), fx.mountLog())
        let show = fx.cmkfs(["audit", "show", vol, "--event", "rotate", "--json"])
        XCTAssertTrue(show.stdout.contains("started"), show.stdout)
        XCTAssertTrue(show.stdout.contains("finished"), show.stdout)
    }

    func testKilledRotationResumesAndPurgeWaitsForIt() throws {
        let n = 2000
        py(Self.populate, [mnt, String(n)], timeout: 300)
        let done = try rotateAndKill()
        let v = try versions()
        XCTAssertEqual(v[2]?.0, "active")
        XCTAssertEqual((v[1]?.1 ?? 0) + (v[2]?.1 ?? 0), n)
        XCTAssertGreaterThan(v[1]?.1 ?? 0, 0, "the rotation finished before it was killed")
        XCTAssertEqual(v[2]?.1, done, "the progress record and the rows disagree")
        // Half-rotated, every file still reads (old and new version both unwrap).
        py(Self.checkAll, [mnt, String(n)], timeout: 300)
        // Version 1 is still needed: purge refuses and says how to finish.
        let refused = fx.cmkfs(["key", "purge", vol, "--version", "1", "--kms-dir", fx.kms])
        XCTAssertEqual(refused.status, 13, "\(refused)")
        XCTAssertTrue(refused.stderr.contains("cmkfs key rotate"), refused.stderr)
        // Resume: the same command picks up where the kill left it.
        let resumed = fx.cmkfs(["key", "rotate", vol, "--kms-dir", fx.kms, "--json"], timeout: 300)
        XCTAssertTrue(resumed.succeeded, "resume: \(resumed)")
        let report = try JSONSerialization.jsonObject(with: Data(resumed.stdout.utf8)) as? [String: Any]
        XCTAssertEqual(report?["resumed"] as? Bool, true)
        XCTAssertEqual(report?["active_version"] as? Int, 2, "a resume must not create another version")
        let after = try versions()
        XCTAssertEqual(after[1]?.1, 0)
        XCTAssertEqual(after[2]?.1, n)
        XCTAssertNil(after[3])
        XCTAssertTrue(fx.cmkfs(["key", "purge", vol, "--version", "1", "--kms-dir", fx.kms]).succeeded)
        try fx.remount()
        py(Self.checkAll, [mnt, String(n)], timeout: 300)
        auditVerifies()
        let events = fx.cmkfs(["audit", "show", vol, "--event", "rotate", "--json"]).stdout
        XCTAssertTrue(events.contains("resumed"), events)
        XCTAssertTrue(fx.cmkfs(["audit", "show", vol, "--event", "purge", "--json"]).stdout.contains("denied"))
    }

    func testForcedPurgeKillsExactlyTheFilesStillUnderTheVersion() throws {
        let n = 1500
        py(Self.populate, [mnt, String(n)], timeout: 300)
        _ = try rotateAndKill()
        let under1 = try versions()[1]?.1 ?? 0
        XCTAssertGreaterThan(under1, 0)
        // Without a terminal and without --yes, a forced purge asks and refuses.
        let unconfirmed = fx.cmkfs(["key", "purge", vol, "--version", "1", "--force", "--kms-dir", fx.kms])
        XCTAssertEqual(unconfirmed.status, 13, "\(unconfirmed)")
        XCTAssertEqual(try versions()[1]?.0, "deactivated")
        let r = fx.cmkfs(["key", "purge", vol, "--version", "1", "--force", "--yes", "--kms-dir", fx.kms, "--json"])
        XCTAssertTrue(r.succeeded, "forced purge: \(r)")
        let report = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any]
        let lost = Set(((report?["unreadable"] as? [[String: Any]]) ?? []).flatMap { ($0["paths"] as? [String]) ?? [] })
        XCTAssertEqual(lost.count, under1)
        // Exactly those files fail, with EACCES; every other file reads back intact.
        let out = python("""
            import os, sys
            root, n = sys.argv[1], int(sys.argv[2])
            for i in range(n):
                rel = f"d{i % 20}/f{i}"
                try:
                    with open(f"{root}/{rel}") as f: ok = f.read() == f"{i}:" * (i % 300 + 1)
                    print(f"{rel} {'ok' if ok else 'WRONG'}")
                except OSError as e:
                    print(f"{rel} errno{e.errno}")
            """, [mnt, String(n)], timeout: 300)
        var failed = Set<String>(), wrong: [String] = []
        for line in out.stdout.split(separator: "\n") {
            let parts = line.split(separator: " ")
            if parts[1] == "errno13" { failed.insert(String(parts[0])) } else if parts[1] != "ok" { wrong.append(String(line)) }
        }
        XCTAssertEqual(wrong, [])
        XCTAssertEqual(failed, lost)
        // The audit log names each one; the rotation then finishes without the purged version.
        let unreadable = fx.cmkfs(["audit", "show", vol, "--event", "purge-unreadable", "--json"]).stdout
        XCTAssertEqual(unreadable.split(separator: "\n").count, under1)
        let resumed = fx.cmkfs(["key", "rotate", vol, "--kms-dir", fx.kms, "--json"], timeout: 300)
        XCTAssertTrue(resumed.succeeded, "\(resumed)")
        let v = try versions()
        XCTAssertEqual(v[1]?.0, "purged")
        XCTAssertEqual(v[2]?.1, n - under1)
        auditVerifies()
    }

    func testUnmountedRotationAndListText() throws {
        py(Self.populate, [mnt, "50"])
        try fx.unmount()
        let r = fx.cmkfs(["key", "rotate", vol, "--kms-dir", fx.kms])
        XCTAssertTrue(r.succeeded, "\(r)")
        let text = fx.cmkfs(["key", "list", vol, "--kms-dir", fx.kms]).stdout
        XCTAssertTrue(text.contains("deactivated"), text)
        XCTAssertEqual(try versions()[2]?.1, 50)
        // The key check moved to version 2: version 1 can go and the volume still mounts.
        XCTAssertTrue(fx.cmkfs(["key", "purge", vol, "--version", "1", "--kms-dir", fx.kms]).succeeded)
        let active = fx.cmkfs(["key", "purge", vol, "--version", "2", "--kms-dir", fx.kms])
        XCTAssertEqual(active.status, 13, "\(active)")
        XCTAssertTrue(active.stderr.contains("active"), active.stderr)
        try fx.mount()
        py(Self.checkAll, [mnt, "50"])
        auditVerifies()
    }
}
