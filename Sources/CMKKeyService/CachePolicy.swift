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
    /// At most this many unwrapped DEKs are kept; the least recently leased (opened) unpinned one
    /// goes first, one per miss on a full cache.
    /// The default holds a working set of 20,000 files (issue 20's small-file rows): at 4,096, a
    /// pass over more files than that missed on every one of them (an LRU cache read in the order
    /// it was filled keeps nothing that is asked for again), an unwrap per file. A cached key
    /// costs about 350 bytes of daemon memory, so the default costs about 10 MB when full.
    public var capacity: Int

    public init(idleTTL: Double = 300, maxLifetime: Double = 3600, leaseRenew: Double = 300, capacity: Int = defaultCapacity) {
        self.idleTTL = idleTTL
        self.maxLifetime = maxLifetime
        self.leaseRenew = leaseRenew
        self.capacity = capacity
    }

    public static let `default` = CachePolicy()
    /// `capacity` unless the operator says otherwise (`--cache-capacity`).
    public static let defaultCapacity = 32_768
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
