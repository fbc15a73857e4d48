import Foundation
import XCTest

/// The CLI as a script or a new operator meets it: every command's --help shows an example,
/// failures print `cmkfs: error:` (and `cmkfs: hint:` where there is one) with the exit code
/// docs/exit-codes.md gives, and every output a script reads has --json with the documented,
/// versioned shape (docs/json.md). CLITests covers exit codes 3–8 and 64; the codes here are
/// the others a test can reach (9 needs the kernel to refuse a mount, 1 is a bug).
final class CLITranscriptTests: IntegrationTestCase {
    override var mountsInSetUp: Bool { false }

    /// Every command path (`[]` is `cmkfs` itself, then `["init"]`, `["cache"]`,
    /// `["cache", "stats"]`, …) from the SUBCOMMANDS sections of --help.
    func commandPaths(_ path: [String] = []) -> [[String]] {
        let help = fx.cmkfs(path + ["--help"]).stdout
        var result = [path]
        guard let section = help.components(separatedBy: "SUBCOMMANDS:\n").dropFirst().first else { return result }
        for line in section.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.isEmpty { break }
            guard line.hasPrefix("  "), !line.hasPrefix("   "), let name = line.split(separator: " ").first else { continue }
            result += commandPaths(path + [String(name)])
        }
        return result
    }

    func testEveryCommandHelpHasAnExample() throws {
        let paths = commandPaths()
        XCTAssertGreaterThanOrEqual(paths.count, 23, "\(paths)")
        for path in paths {
            let r = fx.cmkfs(path + ["--help"])
            let name = (["cmkfs"] + path).joined(separator: " ")
            XCTAssertEqual(r.status, 0, "\(name) --help: \(r)")
            // The example runs the command it documents (a group's example runs one of its
            // subcommands); --help wraps the discussion, so compare with the lines joined.
            let text = r.stdout.split(whereSeparator: \.isWhitespace).joined(separator: " ")
            XCTAssertTrue(text.contains("Example: \(name)"), "\(name) --help has no 'Example: \(name) …':\n\(r.stdout)")
        }
    }

    // MARK: errors: message, hint, exit code

    /// Runs cmkfs expecting `code`, one `cmkfs: error:` line (mentioning `mentioning`) and, when
    /// `hint` is given, a `cmkfs: hint:` line containing it; nothing on stdout.
    @discardableResult
    func assertError(_ arguments: [String], exit code: Int32, mentioning: String, hint: String?, printsSummary: Bool = false,
                     file: StaticString = #filePath, line: UInt = #line) -> ShellResult {
        let r = fx.cmkfs(arguments)
        XCTAssertEqual(r.status, code, "\(r)", file: file, line: line)
        let lines = r.stderr.split(separator: "\n").map(String.init)
        let errors = lines.filter { $0.hasPrefix("cmkfs: error: ") }
        XCTAssertEqual(errors.count, 1, "one error line: \(r)", file: file, line: line)
        XCTAssertTrue(errors.first?.contains(mentioning) == true, "the error mentions \"\(mentioning)\": \(r)", file: file, line: line)
        if let hint {
            XCTAssertTrue(lines.contains { $0.hasPrefix("cmkfs: hint: ") && $0.contains(hint) }, "a hint with \"\(hint)\": \(r)",
                          file: file, line: line)
        }
        if !printsSummary { XCTAssertEqual(r.stdout, "", "errors go to stderr only", file: file, line: line) }
        return r
    }

    func testErrorsHaveTheirDocumentedExitCodesAndHints() throws {
        // 10, I/O error: the volume directory cannot be created (sysfs refuses mkdir, even to root).
        assertError(["init", "/sys/fs/cmkfs-transcript-\(randomHex(6))", "--kms-dir", plain + "/kms"], exit: 10,
                    mentioning: "cannot create", hint: nil)
        // 11, not mounted: the cache lives in the mount.
        assertError(["cache", "stats", vol], exit: 11, mentioning: "is not mounted", hint: "cmkfs mount \(vol)")
        assertError(["cache", "flush", vol], exit: 11, mentioning: "is not mounted", hint: "cmkfs mount")

        try fx.mount()
        sh("echo one > \(mnt)/a && echo two > \(mnt)/b")
        try fx.unmount()
        // 13, refused: the active version cannot be purged.
        assertError(["key", "purge", vol, "--version", "1", "--kms-dir", fx.kms], exit: 13, mentioning: "active", hint: "cmkfs key rotate")
        // 14, incomplete: rekey cannot read a file whose block was tampered with; it names the file.
        let backingB = try fx.backing("b")
        sh("printf 'X' | dd of=\(Shell.quote(backingB)) bs=1 seek=40 conv=notrunc status=none")
        // Exit 14 is a finished run that left some files out: its summary comes first, on stdout.
        let rekey = assertError(["rekey", vol, "--kms-dir", fx.kms, "--json"], exit: 14, mentioning: "/b",
                                hint: "run the same command again", printsSummary: true)
        let summary = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(rekey.stdout.utf8)) as? [String: Any])
        XCTAssertEqual(summary["rekeyed"] as? Int, 1, "\(summary)")
        XCTAssertEqual((summary["failed"] as? [[String: Any]])?.count, 1, "\(summary)")
        // 15, fsck found the same problem; its hint says how to repair.
        let fsck = fx.cmkfs(["fsck", vol, "--kms-dir", fx.kms])
        XCTAssertEqual(fsck.status, 15, "\(fsck)")
        XCTAssertTrue(fsck.stderr.contains("cmkfs: error: ") && fsck.stderr.contains("cmkfs: hint: "), "\(fsck)")
        // 12, audit log not intact: a record edited in place.
        let segment = try XCTUnwrap(try FileManager.default.contentsOfDirectory(atPath: vol + "/audit").filter { $0.hasSuffix(".log") }.sorted().first)
        sh("chattr -a \(vol)/audit/\(segment) 2>/dev/null; sed -i '1s/\"event\":\"init\"/\"event\":\"tnit\"/' \(vol)/audit/\(segment)")
        assertError(["audit", "verify", vol, "--kms-dir", fx.kms], exit: 12, mentioning: "not intact", hint: "evidence")
    }

    // MARK: JSON shapes

    func json(_ arguments: [String], exit code: Int32 = 0, file: StaticString = #filePath, line: UInt = #line) throws -> [String: Any] {
        let r = fx.cmkfs(arguments)
        XCTAssertEqual(r.status, code, "\(r)", file: file, line: line)
        return try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any], "\(r)", file: file, line: line)
    }

    /// Asserts `object` has every key in `keys` (values may be null) and the shape version.
    func assertShape(_ object: [String: Any], _ keys: [String], version: String = "format",
                     file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(object[version] as? Int, 1, "\(version) 1: \(object)", file: file, line: line)
        for key in keys { XCTAssertTrue(object.keys.contains(key), "no \"\(key)\" in \(object)", file: file, line: line) }
    }

    func testEveryScriptableOutputHasVersionedJSON() throws {
        let initJSON = try json(["init", fx.root + "/vol2", "--kms-dir", fx.root + "/kms2", "--json"])
        assertShape(initJSON, ["volume", "volume_id", "key_id", "key_version", "provider", "names"])
        XCTAssertEqual(initJSON["names"] as? String, "encrypted")

        let status = try json(["status", vol, "--kms-dir", fx.kms, "--json"])
        assertShape(status, ["volume", "volume_id", "format", "block_size", "names", "provider", "active_key_version", "key_versions",
                             "file_count", "mounted", "key_check", "audit_key"], version: "json_format")
        XCTAssertEqual(status["format"] as? Int, 2, "status's format is the volume's on-disk format")

        try fx.mount()
        sh("echo one > \(mnt)/a && mkdir \(mnt)/d && echo two > \(mnt)/d/b && cat \(mnt)/a > /dev/null")
        let stats = try json(["cache", "stats", vol, "--json"])
        assertShape(stats, ["entries", "pinned", "capacity", "hits", "misses", "evictions", "flushed", "expired",
                            "idle_ttl_s", "max_lifetime_s", "lease_renew_s", "provider"])

        let rotated = try json(["key", "rotate", vol, "--kms-dir", fx.kms, "--json"])
        assertShape(rotated, ["key_id", "active_version", "resumed", "rewrapped", "failed", "failed_files", "seconds", "per_second"])
        XCTAssertEqual(rotated["active_version"] as? Int, 2)

        let list = try json(["key", "list", vol, "--kms-dir", fx.kms, "--json"])
        assertShape(list, ["key_id", "provider", "versions"])
        XCTAssertNil(list["rotation_in_progress"] as? [String: Any], "no rotation is in progress")
        let versions = try XCTUnwrap(list["versions"] as? [[String: Any]])
        XCTAssertEqual(versions.map { $0["version"] as? Int }, [1, 2])
        for v in versions { for key in ["version", "state", "edeks", "created_at"] { XCTAssertNotNil(v[key], "\(key) in \(v)") } }

        let purged = try json(["key", "purge", vol, "--version", "1", "--kms-dir", fx.kms, "--json"])
        assertShape(purged, ["version", "unreadable"])

        let rekeyed = try json(["rekey", vol, "a", "--kms-dir", fx.kms, "--json"])
        assertShape(rekeyed, ["rekeyed", "resumed", "failed", "seconds"])
        XCTAssertEqual(rekeyed["rekeyed"] as? Int, 1)

        let revoked = try json(["key", "revoke", vol, "--kms-dir", fx.kms, "--reason", "transcript", "--json"])
        assertShape(revoked, ["key_id", "versions", "provider", "already_disabled", "mounted", "flushed", "open_files_cut",
                              "total_ms", "provider_ms", "flush_ms"])
        XCTAssertEqual(revoked["mounted"] as? Bool, true)
        sh("\(Shell.quote(MountFixture.binary)) key enable \(vol) --kms-dir \(fx.kms)")

        let verified = try json(["audit", "verify", vol, "--kms-dir", fx.kms, "--json"])
        assertShape(verified, ["intact", "records", "first_seq", "last_seq", "checkpoint_seq", "checkpoint_time", "notes"])
        XCTAssertEqual(verified["last_seq"] as? Int, verified["records"] as? Int, "\(verified)")
        XCTAssertEqual(verified["intact"] as? Bool, true)

        // audit show --json and export: one record a line, each with its record format "v".
        for command in [["audit", "show", vol, "--json"], ["audit", "export", vol]] {
            let r = fx.cmkfs(command)
            XCTAssertEqual(r.status, 0, "\(r)")
            let records = r.stdout.split(separator: "\n")
            XCTAssertGreaterThan(records.count, 5, "\(r)")
            for record in records {
                let object = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(record.utf8)) as? [String: Any])
                XCTAssertEqual(object["v"] as? Int, 2, "record format 2 (sealed paths): \(record)")
                for key in ["seq", "time", "event", "result", "volume", "mac"] { XCTAssertNotNil(object[key], "\(key) in \(record)") }
            }
        }

        try fx.unmount()
        let fsck = try json(["fsck", vol, "--kms-dir", fx.kms, "--json"])
        assertShape(fsck, ["volume", "files_checked", "blocks_checked", "audit_records", "repair", "seconds", "problems"])
    }
}
