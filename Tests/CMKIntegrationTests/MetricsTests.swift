import Foundation
import XCTest

/// `cmkfs metrics` and `--metrics-textfile` against a live mount: the counters move by what the
/// test did, the textfile is Prometheus text, is rewritten while the mount runs, and goes away
/// with it.
final class MetricsTests: IntegrationTestCase {
    override var mountsInSetUp: Bool { false }

    /// `name{labels}` → value, from Prometheus text; fails the test on a line that is neither a
    /// comment nor a sample.
    func parse(_ text: String, file: StaticString = #filePath, line: UInt = #line) -> [String: Double] {
        var out: [String: Double] = [:]
        for row in text.split(separator: "\n").map(String.init) {
            if row.hasPrefix("# HELP ") || row.hasPrefix("# TYPE ") { continue }
            guard let space = row.lastIndex(of: " "), let value = Double(row[row.index(after: space)...]) ?? (row.hasSuffix(" +Inf") ? .infinity : nil),
                  row.first.map({ $0.isLetter || $0 == "_" }) == true else {
                XCTFail("not a Prometheus text line: '\(row)'", file: file, line: line)
                continue
            }
            let series = String(row[..<space])
            let name = series.prefix { $0 != "{" }
            XCTAssertTrue(name.allSatisfy { $0.isLetter || $0.isNumber || $0 == "_" || $0 == ":" }, row, file: file, line: line)
            if series.contains("{") { XCTAssertTrue(series.hasSuffix("}"), row, file: file, line: line) }
            out[series] = value
        }
        return out
    }

    /// A volume with names in clear: no name key in the cache, so every key count below is the file's.
    var volume: String { fx.root + "/vol-plain-names" }

    func metrics(file: StaticString = #filePath, line: UInt = #line) -> [String: Double] {
        let r = fx.cmkfs(["metrics", volume])
        XCTAssertTrue(r.succeeded, "\(r)", file: file, line: line)
        return parse(r.stdout, file: file, line: line)
    }

    func testCountersMoveByWhatWasDoneAndTheTextfileFollows() throws {
        let dir = plain + "/textfile"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let textfile = dir + "/cmkfs.prom"
        // Someone who may write to the directory links another file at the temporary name: it
        // must be replaced, never written through.
        let victim = plain + "/victim"
        try "precious\n".write(toFile: victim, atomically: false, encoding: .utf8)
        XCTAssertEqual(link(victim, textfile + ".tmp"), 0)
        try fx.initVolume(volume, plaintextNames: true)
        let m = fx.cmkfs(["mount", volume, mnt, "--kms-dir", fx.kms, "--lease-renew", "1s",
                          "-o", "metrics_textfile=\(textfile),metrics_interval=1"])
        XCTAssertTrue(m.succeeded, "\(m)")
        waitUntil(deadline: 10) { FileManager.default.fileExists(atPath: textfile) }
        XCTAssertTrue(FileManager.default.fileExists(atPath: textfile), "the textfile did not appear")
        XCTAssertEqual(try String(contentsOfFile: victim, encoding: .utf8), "precious\n", "the textfile was written through a planted link")

        let before = metrics()
        XCTAssertNotNil(before["cmkfs_key_cache_hits_total"], "\(before)")
        // One create and 100,000 bytes written; one open (a cache hit) and the bytes read back;
        // after a flush, one open that misses and unwraps through the provider.
        sh("head -c 100000 /dev/urandom > \(mnt)/f && cat \(mnt)/f > /dev/null")
        XCTAssertTrue(fx.cmkfs(["cache", "flush", volume]).succeeded)
        sh("cat \(mnt)/f > /dev/null")
        let after = metrics()
        func delta(_ series: String) -> Double { (after[series] ?? 0) - (before[series] ?? 0) }
        XCTAssertEqual(delta("cmkfs_opens_total{op=\"create\"}"), 1, "\(after)")
        XCTAssertEqual(delta("cmkfs_opens_total{op=\"open\"}"), 2, "\(after)")
        XCTAssertEqual(delta("cmkfs_written_bytes_total"), 100_000)
        XCTAssertEqual(delta("cmkfs_read_bytes_total"), 200_000)
        XCTAssertEqual(delta("cmkfs_key_cache_hits_total"), 1)
        // The new file's key entered the cache as a miss too; only the second was unwrapped.
        XCTAssertEqual(delta("cmkfs_key_cache_misses_total"), 2)
        XCTAssertEqual(delta("cmkfs_provider_calls_total{op=\"wrap\",result=\"ok\"}"), 1)
        XCTAssertEqual(delta("cmkfs_provider_calls_total{op=\"unwrap\",result=\"ok\"}"), 1)
        XCTAssertEqual(delta("cmkfs_provider_call_duration_seconds_count{op=\"unwrap\"}"), 1)
        XCTAssertEqual(delta("cmkfs_provider_call_duration_seconds_bucket{le=\"+Inf\",op=\"unwrap\"}"), 1)
        // create, open, flush, open: at least these four records (the flush made the log durable).
        XCTAssertGreaterThanOrEqual(delta("cmkfs_audit_records_total"), 4)
        XCTAssertGreaterThanOrEqual(after["cmkfs_audit_fsync_seconds_count"] ?? 0, 1)
        XCTAssertEqual(after["cmkfs_open_files"], 0)

        // The textfile is rewritten: it catches up with what `cmkfs metrics` says now.
        var written: [String: Double] = [:]
        waitUntil(deadline: 10, interval: 0.2) {
            written = self.parse((try? String(contentsOfFile: textfile, encoding: .utf8)) ?? "")
            return written["cmkfs_opens_total{op=\"open\"}"] == after["cmkfs_opens_total{op=\"open\"}"]
        }
        XCTAssertEqual(written["cmkfs_opens_total{op=\"open\"}"], after["cmkfs_opens_total{op=\"open\"}"], "the textfile was not refreshed")
        XCTAssertFalse(FileManager.default.fileExists(atPath: textfile + ".tmp"))

        // Leases are renewed every second while a key is cached.
        var renewed = after
        waitUntil(deadline: 10, interval: 0.2) {
            renewed = self.metrics()
            return (renewed["cmkfs_lease_renewals_total"] ?? 0) >= 1
        }
        XCTAssertGreaterThanOrEqual(renewed["cmkfs_lease_renewals_total"] ?? 0, 1, "\(renewed)")
        XCTAssertGreaterThanOrEqual(renewed["cmkfs_provider_calls_total{op=\"state\",result=\"ok\"}"] ?? 0, 1)

        // A revoked key: the next open is denied, counted by errno.
        XCTAssertTrue(fx.cmkfs(["key", "revoke", volume, "--kms-dir", fx.kms, "--reason", "metrics test"]).succeeded)
        shFails("cat \(mnt)/f > /dev/null")
        let denied = metrics()
        XCTAssertEqual(denied["cmkfs_denials_total{errno=\"EACCES\"}"] ?? 0, 1, "\(denied)")
        XCTAssertEqual((denied["cmkfs_provider_calls_total{op=\"unwrap\",result=\"error\"}"] ?? 0)
                       - (renewed["cmkfs_provider_calls_total{op=\"unwrap\",result=\"error\"}"] ?? 0), 1)

        try fx.unmount()
        XCTAssertFalse(FileManager.default.fileExists(atPath: textfile), "the textfile outlived the mount")
    }
}
