import Foundation
import CMKSystem

/// Progress of a long command (`key rotate`, `rekey`, `fsck`) on stderr, fed by the volume
/// layer's progress callback (done, total). On a terminal: one redrawn line with a bar, the rate
/// and the time left. Elsewhere (cron, a unit, a pipe): a plain line every `interval` seconds,
/// and a last one when done if any was printed, so a long run is never silent in a log and a
/// short one adds nothing.
struct ProgressReport {
    let label: String
    /// What is counted ("files", "file keys").
    let unit: String
    private let onTerminal = Descriptor(rawValue: STDERR_FILENO).isTerminal
    private let interval: TimeInterval
    private let start = Date()
    private var lastShown: Date?
    private var linesPrinted = 0

    /// The default interval of the plain lines; `CMKFS_PROGRESS_INTERVAL` (seconds) changes it.
    static let defaultInterval: TimeInterval = 5

    init(_ label: String, unit: String) {
        self.label = label
        self.unit = unit
        interval = ProcessInfo.processInfo.environment["CMKFS_PROGRESS_INTERVAL"].flatMap(Double.init).map { max(0, $0) }
            ?? Self.defaultInterval
    }

    mutating func update(_ done: Int, _ total: Int) {
        let now = Date()
        let finished = done >= total
        if onTerminal {
            guard finished || lastShown.map({ now.timeIntervalSince($0) > 0.1 }) ?? true else { return }
            lastShown = now
            let fraction = total > 0 ? min(1, Double(done) / Double(total)) : 1
            let width = 30, filled = Int(fraction * Double(width))
            let bar = String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled)
            write("\r\(label) [\(bar)] \(done)/\(total) \(unit) \(rateAndETA(done, total, now))\u{1B}[K" + (finished ? "\n" : ""))
            return
        }
        if finished {
            // Only after a run long enough to have said something: then say how it ended.
            if linesPrinted > 0 {
                write("cmkfs: \(label): \(done)/\(total) \(unit), done in \(Self.duration(now.timeIntervalSince(start)))\n")
            }
            return
        }
        guard now.timeIntervalSince(lastShown ?? start) >= interval else { return }
        lastShown = now
        linesPrinted += 1
        let percent = total > 0 ? Double(done) * 100 / Double(total) : 100
        write("cmkfs: \(label): \(done)/\(total) \(unit) (\(String(format: "%.0f", percent))%), \(rateAndETA(done, total, now))\n")
    }

    /// "280/s, ETA 1m07s" (the ETA once something is done).
    private func rateAndETA(_ done: Int, _ total: Int, _ now: Date) -> String {
        let elapsed = max(now.timeIntervalSince(start), 0.001)
        let rate = Double(done) / elapsed
        let eta = rate > 0 ? Self.duration(Double(max(0, total - done)) / rate) : "?"
        return String(format: "%.0f/s", rate) + ", ETA " + eta
    }

    /// 42s, 3m07s, 1h02m.
    static func duration(_ seconds: Double) -> String {
        let s = Int(seconds.rounded())
        if s < 60 { return "\(s)s" }
        if s < 3600 { return String(format: "%dm%02ds", s / 60, s % 60) }
        return String(format: "%dh%02dm", s / 3600, (s % 3600) / 60)
    }

    private func write(_ text: String) {
        FileHandle.standardError.write(Data(text.utf8))
    }
}
