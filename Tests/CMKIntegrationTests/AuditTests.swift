import Foundation
import XCTest

/// The audit log on a real mount: every open recorded with its real caller, tampering named by
/// `cmkfs audit verify`, a crash leaving at most a torn tail, and a full disk failing the open.
final class AuditTests: IntegrationTestCase {
    func verify() -> ShellResult { fx.cmkfs(["audit", "verify", vol, "--kms-dir", fx.kms]) }

    /// Records written to the segments so far (whole lines), read from the volume directly.
    func recordsOnDisk() -> Int {
        let dir = vol + "/audit"
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).filter { $0.hasSuffix(".log") }
        return names.reduce(0) { n, name in
            n + ((FileManager.default.contents(atPath: dir + "/" + name)).map { $0.reduce(0) { $0 + ($1 == 0x0A ? 1 : 0) } } ?? 0)
        }
    }

    func records(_ args: [String]) throws -> [[String: Any]] {
        let r = fx.cmkfs(["audit", "show", vol, "--json"] + args)
        XCTAssertTrue(r.succeeded, "\(r)")
        return try r.stdout.split(separator: "\n").map {
            try XCTUnwrap(JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])
        }
    }

    /// Every file opened through the mount is in `audit show --file`, with the uid, pid and
    /// process name of the process that really opened it.
    func testEveryOpenIsRecordedWithItsRealCaller() throws {
        sh("mkdir \(mnt)/d && chmod 777 \(mnt)/d && for i in 1 2 3 4 5; do echo $i > \(mnt)/d/f$i; done && chmod 644 \(mnt)/d/*")
        sh("cat \(mnt)/d/f1 \(mnt)/d/f2 \(mnt)/d/f3 \(mnt)/d/f4 \(mnt)/d/f5 > /dev/null")
        let pid = sh("runuser -u nobody -- sh -c 'echo $$; exec cat \(mnt)/d/f3 > /dev/null'").trimmingCharacters(in: .whitespacesAndNewlines)
        for i in 1...5 {
            let events = try records(["--file", "/d/f\(i)"]).compactMap { $0["event"] as? String }
            XCTAssertEqual(events.filter { $0 == "create" }.count, 1, "f\(i): \(events)")
            XCTAssertGreaterThanOrEqual(events.filter { $0 == "open" }.count, 1, "f\(i): \(events)")
        }
        let byNobody = try records(["--file", "/d/f3", "--event", "open"]).filter { $0["uid"] as? Int == 65534 }
        XCTAssertEqual(byNobody.count, 1)
        XCTAssertEqual(byNobody.first?["gid"] as? Int, 65534)
        XCTAssertEqual((byNobody.first?["pid"] as? Int).map(String.init), pid)
        XCTAssertEqual(byNobody.first?["process"] as? String, "cat")
        XCTAssertEqual(byNobody.first?["cache"] as? String, "hit")
        XCTAssertEqual((byNobody.first?["key"] as? String)?.hasPrefix("mk-"), true)
        let v = verify()
        XCTAssertTrue(v.succeeded, "\(v)")
        XCTAssertTrue(v.stdout.contains("records") && v.stdout.contains("chain intact"), v.stdout)
        let export = fx.cmkfs(["audit", "export", vol, "--since", "1h", "--format", "jsonl"])
        XCTAssertTrue(export.succeeded, "\(export)")
        XCTAssertGreaterThan(export.stdout.split(separator: "\n").count, 12)
        XCTAssertEqual(fx.cmkfs(["audit", "export", vol, "--format", "csv"]).status, 64)
    }

    /// `--event`, `--file`, `--since`/`--until` that no record can match are usage errors
    /// (exit 64, `error:` + `hint:`), for show and export alike, never an empty listing; the
    /// accepted forms still select.
    func testShowAndExportRefuseFiltersThatCannotMatch() throws {
        sh("echo x > \(mnt)/a && cat \(mnt)/a > /dev/null")
        for command in ["show", "export"] {
            let event = fx.cmkfs(["audit", command, vol, "--event", "opne"])
            XCTAssertEqual(event.status, 64, "\(event)")
            XCTAssertTrue(event.stderr.contains("error: unknown audit event 'opne'"), event.stderr)
            XCTAssertTrue(event.stderr.contains("hint: valid events: open, create, truncate"), event.stderr)
            XCTAssertTrue(event.stdout.isEmpty, event.stdout)
            for bad in ["yesterday", "-2h", "2h ago", "2026-13-40T00:00:00Z", "infh"] {
                let since = fx.cmkfs(["audit", command, vol, "--since=\(bad)"])
                XCTAssertEqual(since.status, 64, "\(bad): \(since)")
                XCTAssertTrue(since.stderr.contains("error: cannot read the time '\(bad)' given to --since"), since.stderr)
                XCTAssertTrue(since.stderr.contains("hint: accepted: an ISO-8601 time like 2026-11-24T03:00:00Z"), since.stderr)
            }
            let order = fx.cmkfs(["audit", command, vol, "--since", "1h", "--until", "2h"])
            XCTAssertEqual(order.status, 64, "\(order)")
            XCTAssertTrue(order.stderr.contains("is not before --until"), order.stderr)
            for bad in ["", "/", "../a", "/d/./a"] {
                let file = fx.cmkfs(["audit", command, vol, "--file", bad])
                XCTAssertEqual(file.status, 64, "'\(bad)': \(file)")
                XCTAssertTrue(file.stderr.contains("hint: give the path as the mount shows it"), file.stderr)
            }
        }
        XCTAssertEqual(try records(["--event", "open", "--file", "a/", "--since", "2000-01-01"]).count, 1)
        XCTAssertEqual(try records(["--event", "create", "--since", "2000-01-01T00:00:00+01:00", "--until", "1d"]).count, 0)
        XCTAssertEqual(try records(["--event", "create"]).count, 1)
    }

    /// `--after-seq N` is a cursor (records with seq > N, none twice), and `--follow` prints the
    /// records a live mount appends while it runs, each once and in order, until it is stopped.
    func testAfterSeqCursorAndFollowPrintRecordsOnceAsTheyAreAppended() throws {
        sh("echo x > \(mnt)/a && cat \(mnt)/a > /dev/null")
        let before = try records([])
        let last = try XCTUnwrap(before.last?["seq"] as? Int)
        XCTAssertEqual(try records(["--after-seq", String(last)]).count, 0)
        XCTAssertEqual(try records(["--after-seq", String(last - 1)]).map { $0["seq"] as? Int }, [last])
        XCTAssertEqual(try records(["--after-seq", "0"]).count, before.count)

        let follow = Process()
        follow.executableURL = URL(fileURLWithPath: MountFixture.binary)
        follow.arguments = ["audit", "export", vol, "--follow", "--after-seq", String(last), "--kms-dir", fx.kms]
        let pipe = Pipe()
        follow.standardOutput = pipe
        follow.standardError = FileHandle(forWritingAtPath: "/dev/null")
        let output = OutputCollector()
        pipe.fileHandleForReading.readabilityHandler = { output.append($0.availableData) }
        try follow.run()
        defer {
            if follow.isRunning { follow.terminate() }
            follow.waitUntilExit()
            pipe.fileHandleForReading.readabilityHandler = nil
        }
        func followed() -> [[String: Any]] {
            output.lines.compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        }
        sh("cat \(mnt)/a > /dev/null && echo y > \(mnt)/b")
        XCTAssertTrue(waitUntil(deadline: 30) { followed().contains { $0["event"] as? String == "create" && $0["path"] as? String == "/b" } },
                      "followed: \(output.lines)")
        sh("cat \(mnt)/b > /dev/null")
        XCTAssertTrue(waitUntil(deadline: 30) { followed().contains { $0["event"] as? String == "open" && $0["path"] as? String == "/b" } },
                      "followed: \(output.lines)")
        XCTAssertTrue(follow.isRunning, "--follow exited on its own")
        follow.terminate()
        follow.waitUntilExit()
        let seqs = followed().compactMap { $0["seq"] as? Int }
        XCTAssertEqual(seqs.first, last + 1, "\(seqs)")
        XCTAssertEqual(seqs, Array((last + 1)...(last + seqs.count)), "each record once, in order")
        XCTAssertTrue(followed().contains { $0["event"] as? String == "open" && $0["path"] as? String == "/a" }, "\(output.lines)")
        XCTAssertEqual(seqs, try records(["--after-seq", String(last)]).compactMap { $0["seq"] as? Int }.prefix(seqs.count).map { $0 })
    }

    /// `export --format jsonl` is the documented interface (docs/audit-format.md, "audit export
    /// --format jsonl"): every line has the documented keys in the documented order, `path` in
    /// clear with `path_sealed` right after it, and `--sealed` gives the logged bytes.
    func testExportLinesHaveTheDocumentedFieldsInOrder() throws {
        sh("echo x > \(mnt)/\u{00e9}t\u{00e9} && cat \(mnt)/\u{00e9}t\u{00e9} > /dev/null")
        let export = fx.cmkfs(["audit", "export", vol, "--format", "jsonl", "--event", "create"])
        XCTAssertTrue(export.succeeded, "\(export)")
        let lines = export.stdout.split(separator: "\n", omittingEmptySubsequences: false)
        XCTAssertEqual(lines.last, "", "every line ends with a newline")
        XCTAssertEqual(lines.count, 2, export.stdout)
        let line = String(lines[0])
        let documented = ["v", "seq", "time", "event", "result", "errno", "error", "volume", "file", "path", "path_sealed",
                          "key", "key_version", "cache", "uid", "gid", "pid", "process", "host", "detail", "kms_request",
                          "id", "login_uid", "user", "mountpoint", "cmkfs_version", "prev", "mac"]
        XCTAssertEqual(Self.topLevelKeys(line), documented, line)
        let record = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        XCTAssertEqual(record["path"] as? String, "/\u{00e9}t\u{00e9}")
        XCTAssertEqual(record["cache"] as? String, "new")
        let sealed = fx.cmkfs(["audit", "export", vol, "--sealed", "--event", "create"])
        let logged = try XCTUnwrap(sealed.stdout.split(separator: "\n").first.map(String.init))
        XCTAssertEqual(line.replacingOccurrences(of: #""path":"/\#u{00e9}t\#u{00e9}","path_sealed":"#, with: #""path":"#), logged)
        XCTAssertFalse(Self.topLevelKeys(logged).contains("path_sealed"))
    }

    /// What a SIEM joins on (issue 21): each record's own id (`SESSION-SEQ`, unique), the
    /// caller's login uid and user names — a root shell of a session that logged in as nobody,
    /// as `sudo` gives, is told apart from root's own —, the mountpoint, the symbolic errno of a
    /// denial and the cmkfs version; a revoke record keeps the key version it disabled.
    func testRecordsNameTheLoginUserTheMountpointAndTheirOwnID() throws {
        sh("echo x > \(mnt)/f")
        sh("sh -c 'echo 65534 > /proc/self/loginuid && exec cat \(mnt)/f' > /dev/null")
        sh("cat \(mnt)/f > /dev/null")
        let opens = try records(["--file", "/f", "--event", "open"])
        let sudoed = opens.filter { $0["login_uid"] as? Int == 65534 }
        XCTAssertEqual(sudoed.count, 1, "\(opens)")
        XCTAssertEqual(sudoed.first?["uid"] as? Int, 0)
        XCTAssertEqual(sudoed.first?["user"] as? String, "root")
        XCTAssertEqual(sudoed.first?["login_user"] as? String, "nobody")
        let own = try XCTUnwrap(opens.last, "\(opens)")
        XCTAssertNotEqual(own["login_uid"] as? Int, 65534, "the cache keeps identities per pid")
        let mount = try XCTUnwrap(try records(["--event", "mount"]).last)
        let mountedAt = try XCTUnwrap((mount["detail"] as? String)?.split(separator: ";").first?.replacingOccurrences(of: "mounted at ", with: ""))
        XCTAssertEqual(sudoed.first?["mountpoint"] as? String, mountedAt)
        XCTAssertEqual(sudoed.first?["cmkfs_version"] as? String, fx.cmkfs(["--version"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines))

        XCTAssertTrue(fx.cmkfs(["key", "revoke", vol, "--kms-dir", fx.kms, "--reason", "siem"]).succeeded)
        XCTAssertFalse(fx.sh("cat \(mnt)/f").succeeded)
        XCTAssertTrue(fx.cmkfs(["key", "enable", vol, "--kms-dir", fx.kms]).succeeded)
        // The name key is flushed too: the denial is the open's or the name lookup's (no path).
        let denied = try records([]).filter { $0["result"] as? String == "denied" }
        XCTAssertEqual(denied.first?["errno"] as? Int, Int(EACCES), "\(denied)")
        XCTAssertEqual(denied.first?["errno_name"] as? String, "EACCES", "\(denied)")
        let revoke = try XCTUnwrap(try records(["--event", "revoke"]).last)
        XCTAssertEqual(revoke["key_version"] as? Int, 1, "\(revoke)")

        let all = try records([])
        let ids = all.compactMap { $0["id"] as? String }
        XCTAssertEqual(ids.count, all.count, "every record of this binary has an id")
        XCTAssertEqual(Set(ids).count, ids.count, "ids are unique")
        for r in all {
            let id = try XCTUnwrap(r["id"] as? String), seq = try XCTUnwrap(r["seq"] as? Int)
            let parts = id.split(separator: "-")
            XCTAssertEqual(parts.count, 2, id)
            XCTAssertTrue(parts[0].count == 32 && parts[0].allSatisfy(\.isHexDigit), id)
            XCTAssertEqual(String(parts[1]), String(seq), id)
        }
        let v = verify()
        XCTAssertTrue(v.succeeded, "\(v)")
    }

    /// `-o audit_syslog` (`--audit-syslog`): every record of the mount, from its `mount` to its
    /// `unmount`, also arrives on the journal socket (a datagram socket the test binds, named by
    /// CMKFS_AUDIT_JOURNAL_SOCKET) with its fields, the record as logged in CMKFS_RECORD.
    func testAuditSyslogSendsEachRecordToTheJournal() throws {
        try fx.unmount()
        let socketPath = fx.root + "/journal.sock"
        let listener = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        defer { close(listener) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: Array(socketPath.utf8)) }
        let bound = withUnsafePointer(to: &address) { a in
            a.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        XCTAssertEqual(bound, 0)
        var timeout = timeval(tv_sec: 2, tv_usec: 0)
        setsockopt(listener, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let m = Shell.run("/usr/bin/env", ["CMKFS_AUDIT_JOURNAL_SOCKET=" + socketPath, MountFixture.binary, "mount", vol, mnt,
                                           "--kms-dir", fx.kms, "-o", "audit_syslog"], timeout: 60, logDir: fx.logs)
        XCTAssertTrue(m.succeeded, "\(m)")
        sh("echo x > \(mnt)/f && cat \(mnt)/f > /dev/null")
        try fx.unmount()
        var received: [[String: String]] = []
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        while received.last?["CMKFS_EVENT"] != "unmount" {
            let n = buffer.withUnsafeMutableBytes { recv(listener, $0.baseAddress, $0.count, 0) }
            guard n > 0 else { break }
            var fields: [String: String] = [:]
            for line in String(decoding: buffer[0..<n], as: UTF8.self).split(separator: "\n") {
                let parts = line.split(separator: "=", maxSplits: 1)
                if parts.count == 2 { fields[String(parts[0])] = String(parts[1]) }
            }
            received.append(fields)
        }
        let events = received.compactMap { $0["CMKFS_EVENT"] }
        XCTAssertEqual(events.first, "mount", "\(events)")
        XCTAssertEqual(events.last, "unmount", "\(events)")
        XCTAssertTrue(events.contains("create") && events.contains("open"), "\(events)")
        let logged = ((try? FileManager.default.contentsOfDirectory(atPath: vol + "/audit")) ?? []).filter { $0.hasSuffix(".log") }
            .flatMap { ((try? String(contentsOfFile: vol + "/audit/" + $0, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init) }
        for fields in received {
            let record = try XCTUnwrap(fields["CMKFS_RECORD"])
            XCTAssertTrue(logged.contains(record), "sent as logged: \(record)")
            XCTAssertEqual(fields["SYSLOG_IDENTIFIER"], "cmkfs")
            XCTAssertEqual(fields["CMKFS_MOUNTPOINT"], mnt, "\(fields)")
            XCTAssertNotNil(fields["CMKFS_ID"])
        }
        XCTAssertTrue(verify().succeeded)
    }

    /// The keys of a flat JSON object line, in order.
    static func topLevelKeys(_ line: String) -> [String] {
        var keys: [String] = [], i = line.utf8.startIndex, expectKey = true
        let u = line.utf8
        i = u.index(after: i)
        while i < u.endIndex {
            let c = u[i]
            if c == UInt8(ascii: "\"") {
                var j = u.index(after: i), text: [UInt8] = []
                while u[j] != UInt8(ascii: "\"") {
                    if u[j] == UInt8(ascii: "\\") { text.append(u[j]); j = u.index(after: j) }
                    text.append(u[j]); j = u.index(after: j)
                }
                if expectKey { keys.append(String(decoding: text, as: UTF8.self)); expectKey = false }
                i = u.index(after: j)
                continue
            }
            if c == UInt8(ascii: ",") { expectKey = true }
            i = u.index(after: i)
        }
        return keys
    }

    /// A key use that calls the provider (a new file's wrap, an open that missed the cache)
    /// names its request id (`kms_request`), the id the KMS's own log records; a use served from
    /// the cache names none. The records still verify.
    func testKeyUsesThatCallTheProviderNameTheirRequest() throws {
        sh("echo x > \(mnt)/a")
        try fx.remount()
        sh("cat \(mnt)/a > /dev/null && cat \(mnt)/a > /dev/null")
        let created = try records(["--file", "/a", "--event", "create"])
        XCTAssertEqual(created.count, 1)
        let createID = try XCTUnwrap(created.first?["kms_request"] as? String, "\(created)")
        XCTAssertTrue(createID.count == 32 && createID.allSatisfy(\.isHexDigit), createID)
        let opens = try records(["--file", "/a", "--event", "open"])
        let misses = opens.filter { $0["cache"] as? String == "miss" }, hits = opens.filter { $0["cache"] as? String == "hit" }
        XCTAssertEqual(misses.count, 1, "\(opens)")
        XCTAssertGreaterThanOrEqual(hits.count, 1, "\(opens)")
        let missID = try XCTUnwrap(misses.first?["kms_request"] as? String, "\(misses)")
        XCTAssertNotEqual(missID, createID)
        XCTAssertTrue(hits.allSatisfy { $0["kms_request"] == nil }, "\(hits)")
        let r = fx.cmkfs(["audit", "show", vol])
        XCTAssertTrue(r.stdout.contains("kms_request=\(missID)"), r.stdout)
        let v = verify()
        XCTAssertTrue(v.succeeded, "\(v)")
    }

    /// Tampering with the log of a real volume is named by the CLI with exit code 12; a cut
    /// tail is caught by the checkpoint in meta.db.
    func testVerifyNamesAnEditedRecordAndACutTail() throws {
        sh("echo x > \(mnt)/a && cat \(mnt)/a > /dev/null && cat \(mnt)/a > /dev/null")
        try fx.unmount()
        XCTAssertTrue(verify().succeeded)
        let segment = vol + "/audit/audit-000000000001.log"
        let original = try String(contentsOfFile: segment, encoding: .utf8)
        sh("chattr -a \(segment)")
        var lines = original.split(separator: "\n").map(String.init)
        lines[3] = lines[3].replacingOccurrences(of: #""uid":0"#, with: #""uid":1000"#)
        try (lines.joined(separator: "\n") + "\n").write(toFile: segment, atomically: false, encoding: .utf8)
        var r = verify()
        XCTAssertEqual(r.status, 12, "\(r)")
        XCTAssertTrue(r.stderr.contains("edited: record seq 4"), r.stderr)
        let cut = original.split(separator: "\n").prefix(4).joined(separator: "\n") + "\n"
        try cut.write(toFile: segment, atomically: false, encoding: .utf8)
        r = verify()
        XCTAssertEqual(r.status, 12, "\(r)")
        XCTAssertTrue(r.stderr.contains("truncated:") && r.stderr.contains("cut off"), r.stderr)
    }

    /// `audit show` and `export` check the chain as they stream (before: an edited record was
    /// printed as if nothing had happened): the records before the edited one are printed, then
    /// exit 12 names its segment and line; `--sealed` too.
    func testShowAndExportStopAtAnEditedRecord() throws {
        sh("echo x > \(mnt)/a && cat \(mnt)/a > /dev/null && cat \(mnt)/a > /dev/null")
        try fx.unmount()
        let segment = vol + "/audit/audit-000000000001.log"
        XCTAssertTrue(fx.cmkfs(["audit", "show", vol]).succeeded)
        sh("chattr -a \(segment)")
        var lines = try String(contentsOfFile: segment, encoding: .utf8).split(separator: "\n").map(String.init)
        XCTAssertGreaterThan(lines.count, 4)
        lines[3] = lines[3].replacingOccurrences(of: #""uid":0"#, with: #""uid":1000"#)
        try (lines.joined(separator: "\n") + "\n").write(toFile: segment, atomically: false, encoding: .utf8)
        for args in [["show"], ["export"], ["export", "--sealed"], ["show", "--event", "open"]] {
            let r = fx.cmkfs(["audit"] + args + [vol])
            XCTAssertEqual(r.status, 12, "\(args): \(r)")
            XCTAssertTrue(r.stderr.contains("not intact at audit-000000000001.log line 4: record seq 4 does not match its MAC"), "\(args): \(r.stderr)")
            if args.count == 1 {
                XCTAssertEqual(r.stdout.split(separator: "\n").count, 3, "\(args): the three records before it: \(r.stdout)")
            }
        }
        let after = fx.cmkfs(["audit", "export", vol, "--after-seq", "3"])
        XCTAssertEqual(after.status, 12, "the cursor skips printing, not checking: \(after)")
        XCTAssertEqual(after.stdout, "")
    }

    /// kill -9 of the mount in the middle of heavy use leaves a log that verifies (a torn tail
    /// at most), and the next mount continues the chain.
    func testKillDuringHeavyUseLeavesAVerifiableLog() throws {
        sh("mkdir \(mnt)/h && for i in $(seq 1 50); do echo $i > \(mnt)/h/$i; done")
        let load = Process()
        load.executableURL = URL(fileURLWithPath: "/bin/sh")
        load.arguments = ["-c", "for p in 1 2 3 4; do (while :; do cat \(mnt)/h/* > /dev/null 2>&1 || exit 0; done) & done; wait"]
        let before = recordsOnDisk()
        try load.run()
        defer { if load.isRunning { load.terminate() } }
        // Kill once the readers have really loaded the log (not after a fixed time).
        XCTAssertTrue(waitUntil(deadline: 60) { recordsOnDisk() >= before + 200 }, "the readers wrote no records")
        let pid = try XCTUnwrap(fx.lockPID())
        kill(pid, SIGKILL)
        load.waitUntilExit()
        fx.sh("fusermount3 -u -z \(mnt)")
        let v = verify()
        XCTAssertTrue(v.succeeded, "\(v)")
        let count = Int(v.stdout.split(separator: "\n").last?.split(separator: " ").first ?? "") ?? 0
        XCTAssertGreaterThan(count, 100, v.stdout)
        try fx.mount()
        sh("cat \(mnt)/h/1 > /dev/null")
        try fx.unmount()
        let again = verify()
        XCTAssertTrue(again.succeeded, "\(again)")
    }

    /// The `path` of an open's record is the path at that moment, whatever was renamed or
    /// removed since the file was last opened (the paths kept per inode are dropped by every
    /// change of names): a directory renamed, moved into another, the file renamed, replaced by
    /// a new file, a second link.
    func testOpenRecordsFollowRenamesOfTheFileAndItsDirectories() throws {
        func lastOpen() throws -> String? { try records(["--event", "open"]).last?["path"] as? String }
        sh("mkdir -p \(mnt)/a/b && echo x > \(mnt)/a/b/f && cat \(mnt)/a/b/f > /dev/null")
        XCTAssertEqual(try lastOpen(), "/a/b/f")
        let steps: [(String, String)] = [
            ("mv \(mnt)/a/b \(mnt)/c && cat \(mnt)/c/f", "/c/f"),
            ("mkdir \(mnt)/d && mv \(mnt)/c \(mnt)/d/c2 && cat \(mnt)/d/c2/f", "/d/c2/f"),
            ("mv \(mnt)/d/c2/f \(mnt)/d/c2/g && cat \(mnt)/d/c2/g", "/d/c2/g"),
            ("mv \(mnt)/d \(mnt)/a/e && cat \(mnt)/a/e/c2/g", "/a/e/c2/g"),
            ("rm \(mnt)/a/e/c2/g && echo y > \(mnt)/a/e/c2/g && cat \(mnt)/a/e/c2/g", "/a/e/c2/g"),
            ("mv \(mnt)/a/e/c2/g \(mnt)/h && cat \(mnt)/h", "/h"),
        ]
        for (script, path) in steps {
            sh(script + " > /dev/null")
            XCTAssertEqual(try lastOpen(), path, script)
            // Opened again (now from what was kept): the same path.
            sh("cat \(mnt)" + path + " > /dev/null")
            XCTAssertEqual(try lastOpen(), path, "again: " + script)
        }
        // A file with two names is recorded under one of them, as before.
        sh("ln \(mnt)/h \(mnt)/a/link && cat \(mnt)/a/link > /dev/null")
        let either = try lastOpen()
        XCTAssertTrue(["/h", "/a/link"].contains(either ?? ""), "\(String(describing: either))")
        sh("rm \(mnt)/h && cat \(mnt)/a/link > /dev/null")
        XCTAssertEqual(try lastOpen(), "/a/link")
    }

    /// Opening a file costs no readlink of its backing descriptor (nor the decryption of its
    /// names, which comes with it): its path is joined from the names its lookup or readdirplus
    /// entry noted. Counted with strace on the mount's threads while `find -exec cat` reads 40
    /// files twice, right after a remount (so every inode is new to the mount).
    func testOpensReadNoLinkForTheirPath() throws {
        sh("mkdir \(mnt)/r && for i in $(seq 1 40); do echo $i > \(mnt)/r/$i; done")
        try fx.remount()
        let links = try descriptorLinksRead {
            sh("for n in 1 2; do find \(mnt)/r -type f -exec cat {} + > /dev/null; done")
        }
        XCTAssertEqual(try records(["--event", "open", "--file", "/r/7"]).map { $0["path"] as? String }, ["/r/7", "/r/7"])
        XCTAssertEqual(links.count, 0, "80 opens read \(links.count) links of their descriptors: \(links.prefix(3))")
    }

    /// A file, directory or node made through the mount has its name noted for its records as
    /// a lookup would: the kernel uses the new entry without a LOOKUP, so opening a file right
    /// after creating it reads no link of its descriptor either (before, each first open did,
    /// and a `cache flush` racing it left the record without a path).
    func testOpensRightAfterCreateReadNoLinkForTheirPath() throws {
        let links = try descriptorLinksRead {
            sh("mkdir \(mnt)/n && mkdir \(mnt)/n/d && for i in $(seq 1 40); do echo $i > \(mnt)/n/d/$i; cat \(mnt)/n/d/$i > /dev/null; done")
        }
        XCTAssertEqual(try records(["--event", "open", "--file", "/n/d/7"]).map { $0["path"] as? String }, ["/n/d/7"])
        XCTAssertEqual(links.count, 0, "40 opens right after their creates read \(links.count) links of their descriptors: \(links.prefix(3))")
    }

    /// The links of `/proc/self/fd/N` the mount's threads read while `body` ran (strace).
    /// An unlink changes no path but the unlinked object's: opens of other files right after
    /// one still join their paths from the names noted for them (no readlink of the backing
    /// descriptor, no name decryption) and record the right path. Every unlink used to drop all
    /// noted paths, so each open after an `rm` (of any file) found its path the slow way. One
    /// process stats, unlinks and opens, so each open follows its lookup well within the
    /// entry's 1 s (a LOOKUP between would note the name again).
    func testAnUnlinkKeepsTheNotedPathsOfOtherFiles() throws {
        sh("mkdir \(mnt)/u \(mnt)/v && for i in $(seq 1 20); do echo $i > \(mnt)/u/$i; : > \(mnt)/v/$i; done")
        sh("cat \(mnt)/u/* > /dev/null")
        let program = """
            import os, sys
            u, v = sys.argv[1:3]
            for i in range(1, 21):
                os.stat('%s/%d' % (u, i))
                os.unlink('%s/%d' % (v, i))
                fd = os.open('%s/%d' % (u, i), os.O_RDONLY); os.read(fd, 16); os.close(fd)
            print('done')
            """
        let links = try descriptorLinksRead {
            XCTAssertEqual(py(program, [mnt + "/u", mnt + "/v"]), "done\n")
        }
        XCTAssertEqual(links.count, 0, "20 opens after unlinks of other files read \(links.count) links of their descriptors: \(links.prefix(3))")
        XCTAssertEqual(try records(["--event", "open", "--file", "/u/7"]).map { $0["path"] as? String }, ["/u/7", "/u/7"])
        XCTAssertEqual(sh("ls \(mnt)/v | wc -l"), "0\n")
    }

    func descriptorLinksRead(_ body: () throws -> Void) throws -> [Substring] {
        try syscallsTraced("readlink,readlinkat", body).filter { $0.contains("/proc/self/fd/") }
    }

    /// kill -9 of the mount while readers open files and commands ask for durable records
    /// (`cache flush`, whose record is synced before it answers): every open and every flush
    /// that was answered before the kill has its record in the log (docs/audit-format.md, "What
    /// a crash can lose"), and the log verifies.
    func testKillDuringHeavyUseLosesNoAnsweredRecord() throws {
        sh("mkdir \(mnt)/k && for i in $(seq 1 20); do echo $i > \(mnt)/k/$i; done")
        let marks = fx.root + "/answered"
        try FileManager.default.createDirectory(atPath: marks, withIntermediateDirectories: true)
        // A reader notes a file only after its open (and read) was answered; a flusher notes a
        // flush only after the command reported success. A read cut by a flush is not noted.
        // Both stop once the mount is gone.
        let load = Process()
        load.executableURL = URL(fileURLWithPath: "/bin/sh")
        load.arguments = ["-c", """
            for p in 1 2 3; do (while [ -e \(mnt)/k ]; do for i in $(seq 1 20); do \
              if cat \(mnt)/k/$i > /dev/null 2>&1; then echo $i >> \(marks)/open.$p; fi; done; done) & done
            for p in 1 2; do (while [ -e \(mnt)/k ]; do \
              if \(MountFixture.binary) cache flush \(vol) > /dev/null 2>&1; then echo f >> \(marks)/flush.$p; fi; done) & done
            wait
            """]
        func answered(_ prefix: String) -> [String] {
            let names = ((try? FileManager.default.contentsOfDirectory(atPath: marks)) ?? []).filter { $0.hasPrefix(prefix) }
            return names.flatMap { name in
                ((try? String(contentsOfFile: marks + "/" + name, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
            }
        }
        try load.run()
        defer { if load.isRunning { load.terminate() } }
        XCTAssertTrue(waitUntil(deadline: 60) { answered("open.").count >= 300 && answered("flush.").count >= 5 },
                      "the load got no answers")
        let pid = try XCTUnwrap(fx.lockPID())
        kill(pid, SIGKILL)
        load.waitUntilExit()
        fx.sh("fusermount3 -u -z \(mnt)")
        let opens = answered("open."), flushes = answered("flush.")
        let v = verify()
        XCTAssertTrue(v.succeeded, "\(v)")
        // Counted by file id: a record's path is best effort (null when it cannot be had).
        for i in 1...20 {
            let n = opens.filter { $0 == "\(i)" }.count
            let logged = try records(["--event", "open", "--file", "/k/\(i)"])
            XCTAssertGreaterThanOrEqual(logged.count, n, "answered opens of /k/\(i) are missing from the log; paths logged: \(Set(logged.map { $0["path"] as? String ?? "null" }))")
        }
        XCTAssertGreaterThanOrEqual(try records(["--event", "flush"]).count, flushes.count,
                                    "answered flushes are missing from the log")
    }

    /// With the audit directory's filesystem full, opening a file fails (ENOSPC) instead of
    /// skipping its record, and the mount log says why; once space is back opens work and the
    /// log verifies.
    func testFullAuditDiskFailsTheOpen() throws {
        sh("echo secret > \(mnt)/f && echo other > \(mnt)/g")
        try fx.unmount()
        let audit = vol + "/audit"
        sh("mkdir \(fx.root)/saved && cp -a \(audit)/. \(fx.root)/saved/ && chattr -R -a \(audit) && rm -f \(audit)/*")
        sh("mount -t tmpfs -o size=64k,mode=0700 cmkfs-audit-test \(audit) && cp -a \(fx.root)/saved/. \(audit)/")
        defer {
            _ = fx.cmkfs(["unmount", mnt])
            fx.sh("umount -l \(audit)")
        }
        try fx.mount()
        sh("head -c 200000 /dev/zero > \(audit)/filler 2>/dev/null; true")
        // The segment's last page may still have room for a few records; then opens must fail.
        let r = fx.sh("for i in $(seq 1 40); do cat \(mnt)/f > /dev/null || exit 1; done")
        XCTAssertFalse(r.succeeded, "an open must fail once its record cannot be written: \(r)")
        XCTAssertTrue(r.stderr.contains("No space left on device"), r.stderr)
        XCTAssertTrue(fx.mountLog().contains("audit: cannot record open of /f"), fx.mountLog())
        sh("rm -f \(audit)/filler")
        XCTAssertEqual(sh("cat \(mnt)/g"), "other\n")
        try fx.unmount()
        let v = verify()
        XCTAssertTrue(v.succeeded, "\(v)")
    }
}

/// Bytes from a child's pipe, gathered on the pipe's reader thread and read by the test.
final class OutputCollector: @unchecked Sendable {
    // @unchecked: every access to `data` holds `lock`.
    private let lock = NSLock()
    private var data = Data()
    func append(_ more: Data) { lock.lock(); data.append(more); lock.unlock() }
    /// The complete lines so far.
    var lines: [String] {
        lock.lock(); defer { lock.unlock() }
        let text = String(decoding: data, as: UTF8.self)
        guard let end = text.lastIndex(of: "\n") else { return [] }
        return text[..<end].split(separator: "\n").map(String.init)
    }
}
