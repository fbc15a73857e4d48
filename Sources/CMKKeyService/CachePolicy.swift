/// How long unwrapped DEKs may live in the mount's memory, and how often their master key is
/// re-checked with the provider (the seeds' key leasing).
public struct CachePolicy: Sendable, Equatable {
    /// An entry not used for this long is dropped (and wiped). Entries of open files are in use.
    public var idleTTL: Double
    /// An entry is served at most this long after the provider last vouched for its master key
    /// (the unwrap, or the latest successful renewal). While the provider is unreachable, this
    /// bounds how long access continues.
    public var maxLifetime: Double
    /// How often the master keys in use are re-checked with the provider, in the background.
    public var leaseRenew: Double
    /// At most this many unwrapped DEKs are kept; the least recently used unpinned one goes first.
    public var capacity: Int

    public init(idleTTL: Double = 300, maxLifetime: Double = 3600, leaseRenew: Double = 300, capacity: Int = 4096) {
        self.idleTTL = idleTTL
        self.maxLifetime = maxLifetime
        self.leaseRenew = leaseRenew
        self.capacity = capacity
    }

    public static let `default` = CachePolicy()
}

/// Parses "250ms", "30s", "5m", "1h" or a plain number of seconds.
public func parseDuration(_ text: String) -> Double? {
    let units: [(String, Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600)]
    for (suffix, scale) in units where text.hasSuffix(suffix) {
        guard let value = Double(text.dropLast(suffix.count)), value >= 0 else { return nil }
        return value * scale
    }
    guard let value = Double(text), value >= 0 else { return nil }
    return value
}
