import ArgumentParser
import CMKControl
import CMKVolume

/// `cmkfs metrics VOL`: the live mount's counters in Prometheus' text format.
struct MetricsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "metrics",
        abstract: "Print the live mount's counters in Prometheus text format.",
        discussion: """
        Opens, key-cache hits and misses, provider calls and latency, lease renewals, audit records \
        and fsync latency, denials by errno, bytes read and written (docs/operator-guide.md, \
        "Metrics"). For node_exporter's textfile collector, mount with --metrics-textfile instead.

        Example: cmkfs metrics /srv/secure-vol | grep cmkfs_key_cache
        """)

    @Argument(help: "The volume directory (it must be mounted).") var volume: String

    func run() {
        reporting { () throws(CMKError) in
            let response = try ControlClient.send(.metrics, volume: volume)
            guard let text = response.metrics else { throw CMKError(.io, "the live mount sent no metrics (is it an older cmkfs?)") }
            print(text, terminator: "")
        }
    }
}
