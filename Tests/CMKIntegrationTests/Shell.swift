import Foundation
import XCTest

/// The outcome of one child process.
struct ShellResult: CustomStringConvertible {
    var command: String
    var status: Int32
    var stdout: String
    var stderr: String
    var timedOut: Bool
    var seconds: Double

    var succeeded: Bool { status == 0 && !timedOut }

    var description: String {
        "`\(command)` exited \(status)\(timedOut ? " (TIMED OUT)" : "") after \(String(format: "%.2f", seconds)) s\n"
            + "stdout: \(stdout.suffix(2000))\nstderr: \(stderr.suffix(2000))"
    }
}

/// Runs child processes with a hard timeout.
///
/// A hung FUSE daemon blocks every process that touches its mount, so nothing here waits without
/// a limit: each command runs under coreutils `timeout` (which puts the command in a process group
/// of its own and kills that whole group), and a watchdog here SIGKILLs the group if even that
/// does not end it. Output goes to files, so a grandchild that keeps a descriptor open cannot
/// block the reader.
enum Shell {
    /// `/usr/bin/python3` when present (a stable interpreter without shims), else `python3`.
    static let python: String = FileManager.default.isExecutableFile(atPath: "/usr/bin/python3") ? "/usr/bin/python3" : "python3"

    private static let counter = Counter()

    /// Runs `script` with `/bin/sh -c`.
    @discardableResult
    static func sh(_ script: String, timeout: TimeInterval = 120, logDir: String) -> ShellResult {
        run("/bin/sh", ["-c", script], timeout: timeout, logDir: logDir, label: script)
    }

    /// Runs `executable` with `arguments` (no shell).
    @discardableResult
    static func run(_ executable: String, _ arguments: [String], timeout: TimeInterval = 120,
                    logDir: String, label: String? = nil) -> ShellResult {
        let label = label ?? ([executable] + arguments).joined(separator: " ")
        let n = counter.next()
        try? FileManager.default.createDirectory(atPath: logDir, withIntermediateDirectories: true)
        let outPath = "\(logDir)/cmd-\(n).out", errPath = "\(logDir)/cmd-\(n).err"
        _ = FileManager.default.createFile(atPath: outPath, contents: nil)
        _ = FileManager.default.createFile(atPath: errPath, contents: nil)
        defer {
            try? FileManager.default.removeItem(atPath: outPath)
            try? FileManager.default.removeItem(atPath: errPath)
        }
        let seconds = max(1, Int(timeout.rounded(.up)))
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/timeout")
        process.arguments = ["--kill-after=5", String(seconds), executable] + arguments
        process.standardInput = FileHandle(forReadingAtPath: "/dev/null")
        let outHandle = FileHandle(forWritingAtPath: outPath)!
        let errHandle = FileHandle(forWritingAtPath: errPath)!
        process.standardOutput = outHandle
        process.standardError = errHandle
        let done = DispatchSemaphore(value: 0)
        process.terminationHandler = { _ in done.signal() }
        let start = Date()
        do {
            try process.run()
        } catch {
            try? outHandle.close(); try? errHandle.close()
            return ShellResult(command: label, status: 127, stdout: "", stderr: "cannot start: \(error)", timedOut: false, seconds: 0)
        }
        try? outHandle.close(); try? errHandle.close()
        var killedByWatchdog = false
        if done.wait(timeout: .now() + .seconds(seconds + 15)) == .timedOut {
            // `timeout` made itself a process-group leader: kill the group, then the leader.
            let pid = process.processIdentifier
            kill(-pid, SIGKILL)
            kill(pid, SIGKILL)
            killedByWatchdog = true
            _ = done.wait(timeout: .now() + .seconds(30))
        }
        let elapsed = Date().timeIntervalSince(start)
        let status = process.isRunning ? -1 : process.terminationStatus
        let stdout = (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? String(decoding: FileManager.default.contents(atPath: outPath) ?? Data(), as: UTF8.self)
        let stderr = (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? String(decoding: FileManager.default.contents(atPath: errPath) ?? Data(), as: UTF8.self)
        // coreutils `timeout` exits 124 when it had to send its signal.
        return ShellResult(command: label, status: status, stdout: stdout, stderr: stderr,
                           timedOut: killedByWatchdog || status == 124 || (status == 137 && elapsed >= Double(seconds)),
                           seconds: elapsed)
    }

    /// Single-quotes `s` for /bin/sh.
    static func quote(_ s: String) -> String {
        "'" + s.replacingOccurrences(of: "'", with: "'\\''") + "'"
    }
}

private final class Counter: @unchecked Sendable {
    private var value = 0
    private let lock = NSLock()
    func next() -> Int {
        lock.lock(); defer { lock.unlock() }
        value += 1
        return value
    }
}
