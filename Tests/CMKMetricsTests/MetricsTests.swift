import XCTest
@testable import CMKMetrics

final class MetricsTests: XCTestCase {
    /// Many threads adding at once lose no increment (the counters are atomics, not plain integers).
    func testCountersLoseNothingUnderConcurrentAdds() {
        let counter = Counter()
        DispatchQueue.concurrentPerform(iterations: 8) { _ in
            for _ in 0..<100_000 { counter.add() }
        }
        XCTAssertEqual(counter.current, 800_000)
    }

    func testHistogramBucketsAreCumulativeWithSumAndCount() {
        let h = Histogram(bounds: [0.001, 0.01, 0.1])
        h.observe(nanoseconds: 500_000)      // 0.5 ms
        h.observe(nanoseconds: 1_000_000)    // 1 ms: on the bound, counted in it (le)
        h.observe(nanoseconds: 50_000_000)   // 50 ms
        h.observe(nanoseconds: 2_000_000_000) // 2 s: only +Inf
        let s = h.snapshot()
        XCTAssertEqual(s.cumulative, [2, 2, 3, 4])
        XCTAssertEqual(s.total, 4)
        XCTAssertEqual(s.sumSeconds, 2.0515, accuracy: 1e-9)
        var text = PrometheusText()
        text.family("t_seconds", "help", type: .histogram)
        text.histogram("t_seconds", ["op": "unwrap"], h)
        XCTAssertEqual(text.text, """
            # HELP t_seconds help
            # TYPE t_seconds histogram
            t_seconds_bucket{le="0.001",op="unwrap"} 2
            t_seconds_bucket{le="0.01",op="unwrap"} 2
            t_seconds_bucket{le="0.1",op="unwrap"} 3
            t_seconds_bucket{le="+Inf",op="unwrap"} 4
            t_seconds_sum{op="unwrap"} 2.0515
            t_seconds_count{op="unwrap"} 4

            """)
    }

    /// Label values are escaped as the exposition format says (backslash, double quote, newline).
    func testLabelValuesAreEscaped() {
        var text = PrometheusText()
        text.sample("x_total", ["b": "a\"b\\c\nd", "a": "1"], UInt64(3))
        XCTAssertEqual(text.text, #"x_total{a="1",b="a\"b\\c\nd"} 3"# + "\n")
    }

    func testDenialsAreLabelledByErrnoSymbol() {
        let d = ErrnoCounters()
        d.add(EACCES); d.add(EACCES); d.add(EIO); d.add(9999)
        let snapshot = Dictionary(uniqueKeysWithValues: d.snapshot().map { ($0.symbol, $0.count) })
        XCTAssertEqual(snapshot, ["EACCES": 2, "EIO": 1, "EOTHER": 1])
    }

    /// Every line the mount renders is a comment or `name{labels} value`, and every family has
    /// HELP and TYPE before its samples.
    func testRenderedTextIsWellFormedExposition() throws {
        let m = Metrics()
        m.opens.add(3)
        m.denials.add(EACCES)
        m.provider.record(.unwrap, since: Metrics.now(), succeeded: true)
        m.auditFsync.observe(nanoseconds: 3_000_000)
        var out = PrometheusText()
        m.render(into: &out)
        let sample = try NSRegularExpression(pattern: #"^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\])*"(,[a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\])*")*\})? (-?[0-9.]+(e[+-]?[0-9]+)?|\+Inf|NaN)$"#)
        var typed = Set<String>()
        for line in out.text.split(separator: "\n").map(String.init) {
            if line.hasPrefix("# TYPE ") { typed.insert(String(line.split(separator: " ")[2])); continue }
            if line.hasPrefix("# HELP ") { continue }
            XCTAssertEqual(sample.numberOfMatches(in: line, range: NSRange(line.startIndex..., in: line)), 1, line)
            let name = String(line.prefix { $0 != "{" && $0 != " " })
            let family = ["_bucket", "_sum", "_count"].reduce(name) { n, suffix in
                n.hasSuffix(suffix) && typed.contains(String(n.dropLast(suffix.count))) ? String(n.dropLast(suffix.count)) : n
            }
            XCTAssertTrue(typed.contains(family), "\(line): no # TYPE before it")
        }
        XCTAssertTrue(out.text.contains("cmkfs_opens_total{op=\"open\"} 3\n"), out.text)
        XCTAssertTrue(out.text.contains("cmkfs_denials_total{errno=\"EACCES\"} 1\n"), out.text)
        XCTAssertTrue(out.text.contains("cmkfs_provider_calls_total{op=\"unwrap\",result=\"ok\"} 1\n"), out.text)
        XCTAssertTrue(out.text.contains("cmkfs_audit_fsync_seconds_bucket{le=\"0.005\"} 1\n"), out.text)
    }
}
