import Glibc
import Synchronization
import CMKSystem

/// A monotonically increasing count. `add` is one relaxed atomic add: no lock, no allocation, so
/// it can sit on the read and write paths (docs/operator-guide.md, "Metrics").
public final class Counter: Sendable {
    @usableFromInline let value = Atomic<UInt64>(0)

    public init() {}

    @inlinable
    public func add(_ n: UInt64 = 1) { value.wrappingAdd(n, ordering: .relaxed) }

    public var current: UInt64 { value.load(ordering: .relaxed) }
}

/// A latency distribution in Prometheus' shape: counts per upper bound (seconds), a sum and a
/// count. `observe` is two or three relaxed atomic adds.
public final class Histogram: Sendable {
    /// Upper bounds in seconds, ascending; `+Inf` is implied.
    public let bounds: [Double]
    private let buckets: [Counter]
    private let sumNanoseconds = Counter()
    private let count = Counter()

    /// From 100 µs to 10 s: a provider call or an fsync is anywhere from a local HSM's tens of
    /// microseconds to a remote KMS's timeout.
    public static let latencyBounds: [Double] = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                                 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]

    public init(bounds: [Double] = Histogram.latencyBounds) {
        self.bounds = bounds
        buckets = (0...bounds.count).map { _ in Counter() }
    }

    /// Records one observation of `nanoseconds`.
    public func observe(nanoseconds: UInt64) {
        let seconds = Double(nanoseconds) / 1e9
        let index = bounds.firstIndex(where: { seconds <= $0 }) ?? bounds.count
        buckets[index].add()
        sumNanoseconds.add(nanoseconds)
        count.add()
    }

    /// Records the time since `start` (`Metrics.now()`).
    public func observe(since start: UInt64) { observe(nanoseconds: Metrics.now() &- start) }

    /// Cumulative counts per bound (the last is `+Inf`, equal to `total`), the sum in seconds and the count.
    public func snapshot() -> (cumulative: [UInt64], sumSeconds: Double, total: UInt64) {
        var running: UInt64 = 0
        let cumulative = buckets.map { running &+= $0.current; return running }
        return (cumulative, Double(sumNanoseconds.current) / 1e9, count.current)
    }
}

/// Counts by errno, one counter per number Linux defines (and one for anything else).
public final class ErrnoCounters: Sendable {
    private let counters: [Counter] = (0...134).map { _ in Counter() }

    public init() {}

    public func add(_ errno: Int32) {
        counters[errno > 0 && errno < 134 ? Int(errno) : 134].add()
    }

    /// The non-zero counts, by errno symbol ("EACCES"); anything out of range is "EOTHER".
    public func snapshot() -> [(symbol: String, count: UInt64)] {
        counters.enumerated().compactMap { i, c in
            let n = c.current
            guard n > 0, i > 0 else { return nil }
            return (i == 134 ? "EOTHER" : Errno(rawValue: Int32(i)).symbol, n)
        }
    }
}

/// The key-provider calls a mount makes, as `MeteredProvider` sees them.
public enum ProviderOperation: String, CaseIterable, Sendable {
    case wrap, unwrap, state, setState = "set_state", createKey = "create_key", createVersion = "create_version"
    case auditAnchor = "audit_anchor", setAuditAnchor = "set_audit_anchor"
}

/// Calls and latency per provider operation, split into answered (`ok`) and failed (`error`).
public final class ProviderMetrics: Sendable {
    private let ok: [Counter] = ProviderOperation.allCases.map { _ in Counter() }
    private let failed: [Counter] = ProviderOperation.allCases.map { _ in Counter() }
    private let latency: [Histogram] = ProviderOperation.allCases.map { _ in Histogram() }

    public init() {}

    private static func index(_ op: ProviderOperation) -> Int { ProviderOperation.allCases.firstIndex(of: op)! }

    /// One call of `op` that began at `start` (`Metrics.now()`) and succeeded or not.
    public func record(_ op: ProviderOperation, since start: UInt64, succeeded: Bool) {
        let i = Self.index(op)
        (succeeded ? ok : failed)[i].add()
        latency[i].observe(since: start)
    }

    public func calls(_ op: ProviderOperation, succeeded: Bool) -> UInt64 { (succeeded ? ok : failed)[Self.index(op)].current }
    public func latency(_ op: ProviderOperation) -> Histogram { latency[Self.index(op)] }
}

/// The counters of this process (one mount per daemon). Hot paths add to them with one line
/// (`Metrics.shared.bytesRead.add(n)`); `cmkfs metrics` and the textfile writer read them.
/// Counters the key cache keeps itself (hits, misses, …) are read from it at render time instead.
public final class Metrics: Sendable {
    public static let shared = Metrics()

    /// Regular files opened (`open`) and created (`create`) with their key.
    public let opens = Counter()
    public let creates = Counter()
    /// Plaintext bytes returned to readers and accepted from writers.
    public let bytesRead = Counter()
    public let bytesWritten = Counter()
    /// Key uses refused or failed (open, create, truncate, read, write, name key), by errno.
    public let denials = ErrnoCounters()
    /// Renewals of a master-key version's leases the provider confirmed, and checks that failed
    /// (provider unreachable; a key the provider refused is a flush, counted by the cache).
    public let leaseRenewals = Counter()
    public let leaseRenewalFailures = Counter()
    /// Audit records appended, and the time each fsync of the log took.
    public let auditRecords = Counter()
    public let auditFsync = Histogram()
    /// Key-provider calls and their latency.
    public let provider = ProviderMetrics()

    public init() {}

    /// Nanoseconds on the monotonic clock (one vDSO call).
    public static func now() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
    }

    /// Appends this process's counters to `out`.
    public func render(into out: inout PrometheusText) {
        out.family("cmkfs_opens_total", "Regular files opened or created with their data key.", type: .counter)
        out.sample("cmkfs_opens_total", ["op": "open"], opens.current)
        out.sample("cmkfs_opens_total", ["op": "create"], creates.current)
        out.family("cmkfs_read_bytes_total", "Plaintext bytes read through the mount.", type: .counter)
        out.sample("cmkfs_read_bytes_total", [:], bytesRead.current)
        out.family("cmkfs_written_bytes_total", "Plaintext bytes written through the mount.", type: .counter)
        out.sample("cmkfs_written_bytes_total", [:], bytesWritten.current)
        out.family("cmkfs_denials_total", "Key uses refused or failed (open, create, truncate, read, write), by errno.", type: .counter)
        for (symbol, n) in denials.snapshot() { out.sample("cmkfs_denials_total", ["errno": symbol], n) }
        out.family("cmkfs_lease_renewals_total", "Master-key versions whose leases the provider renewed.", type: .counter)
        out.sample("cmkfs_lease_renewals_total", [:], leaseRenewals.current)
        out.family("cmkfs_lease_renewal_failures_total", "Lease renewals that could not reach the provider.", type: .counter)
        out.sample("cmkfs_lease_renewal_failures_total", [:], leaseRenewalFailures.current)
        out.family("cmkfs_audit_records_total", "Audit records appended to the volume's log.", type: .counter)
        out.sample("cmkfs_audit_records_total", [:], auditRecords.current)
        out.family("cmkfs_audit_fsync_seconds", "Time of each fsync of the audit log.", type: .histogram)
        out.histogram("cmkfs_audit_fsync_seconds", [:], auditFsync)
        out.family("cmkfs_provider_calls_total", "Key-provider calls, by operation and result.", type: .counter)
        for op in ProviderOperation.allCases {
            for succeeded in [true, false] {
                let n = provider.calls(op, succeeded: succeeded)
                if n > 0 || op == .unwrap || op == .wrap || op == .state {
                    out.sample("cmkfs_provider_calls_total", ["op": op.rawValue, "result": succeeded ? "ok" : "error"], n)
                }
            }
        }
        out.family("cmkfs_provider_call_duration_seconds", "Key-provider call latency, by operation.", type: .histogram)
        for op in ProviderOperation.allCases where op == .unwrap || op == .wrap || op == .state || provider.latency(op).snapshot().total > 0 {
            out.histogram("cmkfs_provider_call_duration_seconds", ["op": op.rawValue], provider.latency(op))
        }
    }
}

/// Prometheus' text exposition format (version 0.0.4): `# HELP` and `# TYPE` lines, then one
/// `name{label="value",…} value` line per sample.
public struct PrometheusText: Sendable {
    public enum MetricType: String, Sendable { case counter, gauge, histogram }

    public private(set) var text = ""

    public init() {}

    public mutating func family(_ name: String, _ help: String, type: MetricType) {
        text += "# HELP \(name) \(help)\n# TYPE \(name) \(type.rawValue)\n"
    }

    public mutating func sample(_ name: String, _ labels: [String: String], _ value: UInt64) {
        text += "\(name)\(Self.labels(labels)) \(value)\n"
    }

    public mutating func sample(_ name: String, _ labels: [String: String], _ value: Double) {
        text += "\(name)\(Self.labels(labels)) \(Self.number(value))\n"
    }

    /// `_bucket{le=…}` lines (cumulative), `_sum` and `_count`.
    public mutating func histogram(_ name: String, _ labels: [String: String], _ h: Histogram) {
        let s = h.snapshot()
        for (i, n) in s.cumulative.enumerated() {
            var l = labels
            l["le"] = i < h.bounds.count ? Self.number(h.bounds[i]) : "+Inf"
            sample(name + "_bucket", l, n)
        }
        sample(name + "_sum", labels, s.sumSeconds)
        sample(name + "_count", labels, s.total)
    }

    /// A float as Prometheus reads it: no exponent surprises for the bounds used here.
    static func number(_ v: Double) -> String {
        if v == v.rounded(), abs(v) < 1e15 { return String(Int64(v)) }
        return "\(v)"
    }

    /// `{a="x",b="y"}` sorted by name, values escaped (backslash, quote, newline); empty without labels.
    static func labels(_ labels: [String: String]) -> String {
        guard !labels.isEmpty else { return "" }
        let body = labels.sorted { $0.key < $1.key }.map { key, value in
            var escaped = ""
            for c in value {
                switch c {
                case "\\": escaped += "\\\\"
                case "\"": escaped += "\\\""
                case "\n": escaped += "\\n"
                default: escaped.append(c)
                }
            }
            return "\(key)=\"\(escaped)\""
        }
        return "{" + body.joined(separator: ",") + "}"
    }
}
