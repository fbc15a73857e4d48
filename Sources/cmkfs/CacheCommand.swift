import ArgumentParser
import Foundation
import CMKControl
import CMKKeyService
import CMKVolume

struct CacheCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cache",
        abstract: "Inspect or flush the live mount's cache of unwrapped data keys.",
        discussion: "Example: cmkfs cache stats /srv/secure-vol",
        subcommands: [Stats.self, Flush.self]
    )

    struct Stats: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Entries, hits, misses, evictions, oldest lease, KMS health.",
                                                        discussion: "Example: cmkfs cache stats /srv/secure-vol --json")
        @Argument(help: "The volume directory (it must be mounted).") var volume: String
        @Flag(help: "Print one JSON object.") var json = false

        func run() {
            reporting { () throws(CMKError) in
                let response = try ControlClient.send(.stats, volume: volume)
                guard let s = response.stats else { throw CMKError(.io, "the live mount sent no statistics") }
                if json {
                    let encoder = JSONEncoder()
                    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
                    print(String(decoding: (try? encoder.encode(s)) ?? Data(), as: UTF8.self))
                    return
                }
                print("entries:      \(s.entries) of \(s.capacity) (\(s.pinned) in use by open files)")
                print("hits:         \(s.hits)")
                print("misses:       \(s.misses)")
                print("evictions:    \(s.evictions)   flushed: \(s.flushed)   expired: \(s.expired)")
                print("oldest lease: " + (s.oldestLeaseAgeSeconds.map { String(format: "%.1f s", $0) } ?? "-"))
                print("policy:       idle TTL \(s.idleTTLSeconds) s, max lifetime \(s.maxLifetimeSeconds) s, renew every \(s.leaseRenewSeconds) s")
                print("KMS health:   \(s.provider.state)" + (s.provider.checkedAt.map { String(format: ", checked %.1f s ago", $0) } ?? "")
                      + (s.provider.detail.map { " (\($0))" } ?? ""))
            }
        }
    }

    struct Flush: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Drop every unwrapped key in the live mount now.",
            discussion: "The next open of each file unwraps its key again. Example: cmkfs cache flush /srv/secure-vol")
        @Argument(help: "The volume directory (it must be mounted).") var volume: String

        func run() {
            reporting { () throws(CMKError) in
                let r = try ControlClient.send(.flush(reason: "cmkfs cache flush"), volume: volume)
                print("flushed \(r.flushed ?? 0) keys; \(r.openFilesCut ?? 0) open files must be reopened; "
                      + String(format: "%.1f ms", r.elapsedMilliseconds ?? 0))
            }
        }
    }
}
