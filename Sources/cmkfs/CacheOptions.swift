import ArgumentParser
import CMKKeyService

/// The mount's key-cache and leasing settings (see the operator's guide for the trade-off).
struct CacheOptions: ParsableArguments {
    @Option(name: .customLong("cache-idle-ttl"), help: "Drop an unwrapped key unused this long (e.g. 30s, 5m).")
    var idleTTL: String = "5m"

    @Option(name: .customLong("cache-max-lifetime"), help: "Serve a key at most this long after the provider last vouched for it.")
    var maxLifetime: String = "1h"

    @Option(name: .customLong("lease-renew"), help: "Re-check the master keys in use with the provider this often.")
    var leaseRenew: String = "5m"

    @Option(name: .customLong("cache-capacity"), help: "At most this many unwrapped keys in memory.")
    var capacity: Int = CachePolicy.defaultCapacity

    func validate() throws {
        for (flag, value) in [("--cache-idle-ttl", idleTTL), ("--cache-max-lifetime", maxLifetime), ("--lease-renew", leaseRenew)] {
            guard let seconds = parseDuration(value), seconds > 0 else {
                throw ValidationError("\(flag) takes a duration such as 250ms, 30s, 5m or 1h, not '\(value)'")
            }
        }
        guard capacity >= 1 else { throw ValidationError("--cache-capacity must be at least 1") }
        // A key is served at most --cache-max-lifetime after the provider last vouched for it;
        // renewing less often than that would cut every open file at each lifetime's end.
        if let renew = parseDuration(leaseRenew), let lifetime = parseDuration(maxLifetime), renew >= lifetime {
            throw ValidationError("--lease-renew \(leaseRenew) must be shorter than --cache-max-lifetime \(maxLifetime): keys would expire before they are renewed")
        }
    }

    var policy: CachePolicy {
        CachePolicy(idleTTL: parseDuration(idleTTL)!, maxLifetime: parseDuration(maxLifetime)!,
                    leaseRenew: parseDuration(leaseRenew)!, capacity: capacity)
    }

    /// The same settings as arguments for the background daemon.
    var arguments: [String] {
        ["--cache-idle-ttl", idleTTL, "--cache-max-lifetime", maxLifetime, "--lease-renew", leaseRenew,
         "--cache-capacity", String(capacity)]
    }
}
