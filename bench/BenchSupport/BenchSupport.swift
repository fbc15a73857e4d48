// What the by-hand micro-benchmarks (syscall-overhead, name-codec, audit-record) share: their
// command line, their clocks and how they print a result. Not used by cmkfs itself.
import Glibc

/// `[--calls N] [--rounds R] [--dir DIR] [--only CASE]`.
public struct BenchOptions {
    /// Calls per round of each case.
    public var calls: Int
    /// Rounds of each case; the median and minimum are printed.
    public var rounds: Int
    /// Where the case's files go.
    public var directory: String
    /// Only the cases whose name contains this (for `perf record` of one case).
    public var only = ""

    /// The options of `tool` from its command line, starting from the given defaults; a wrong
    /// option prints the usage and exits 2. `only`: whether the tool takes `--only`.
    public static func parse(tool: String, calls: Int, rounds: Int = 7, directory: String, only: Bool = true) -> BenchOptions {
        var options = BenchOptions(calls: calls, rounds: rounds, directory: directory)
        var args = CommandLine.arguments.dropFirst().makeIterator()
        while let arg = args.next() {
            switch arg {
            case "--calls": options.calls = Int(args.next() ?? "") ?? options.calls
            case "--rounds": options.rounds = Int(args.next() ?? "") ?? options.rounds
            case "--dir": options.directory = args.next() ?? options.directory
            case "--only" where only: options.only = args.next() ?? ""
            default:
                print("usage: \(tool) [--calls N] [--rounds R] [--dir DIR]\(only ? " [--only CASE]" : "")")
                exit(2)
            }
        }
        return options
    }
}

/// `clock` now, in seconds.
public func now(_ clock: clockid_t) -> Double {
    var t = timespec()
    clock_gettime(clock, &t)
    return Double(t.tv_sec) + Double(t.tv_nsec) / 1e9
}

/// This thread's CPU time, in seconds: steadier than wall time on a shared machine.
public func cpuNow() -> Double { now(CLOCK_THREAD_CPUTIME_ID) }

public func median(_ xs: [Double]) -> Double { xs.sorted()[xs.count / 2] }

/// Three decimals.
public func fmt(_ x: Double) -> String { String((x * 1000).rounded() / 1000) }
