import Foundation
import XCTest

extension IntegrationTestCase {
    /// The lines strace wrote for `syscalls` (its -e trace list) on every thread of the mount
    /// while `body` ran, one per call: a call strace split because another thread's call came
    /// in between (`<unfinished ...>`, then `<... name resumed>`) is joined back into one line,
    /// at the place of its end.
    func syscallsTraced(_ syscalls: String, _ body: () throws -> Void) throws -> [Substring] {
        let pid = try XCTUnwrap(fx.lockPID())
        let trace = fx.root + "/strace-\(syscalls).out"
        try? FileManager.default.removeItem(atPath: trace)
        let strace = Process()
        strace.executableURL = URL(fileURLWithPath: "/usr/bin/strace")
        strace.arguments = ["-f", "-qq", "-e", "trace=\(syscalls)", "-o", trace, "-p", "\(pid)"]
        try strace.run()
        defer { if strace.isRunning { strace.terminate(); strace.waitUntilExit() } }
        XCTAssertTrue(waitUntil(deadline: 30) { self.everyThread(of: pid, tracedBy: strace.processIdentifier) },
                      "strace did not attach to the mount's threads")
        let before = (try? String(contentsOfFile: trace, encoding: .utf8)) ?? ""
        try body()
        kill(strace.processIdentifier, SIGINT)
        strace.waitUntilExit()
        let all = (try? String(contentsOfFile: trace, encoding: .utf8)) ?? ""
        return Self.joiningSplitCalls(all.dropFirst(before.count).split(separator: "\n"))
    }

    /// strace lines ("TID call(args) = result") with each split call joined: "TID call(args
    /// <unfinished ...>" and, later, "TID <... call resumed>rest of args) = result".
    static func joiningSplitCalls(_ lines: [Substring]) -> [Substring] {
        var unfinished: [Substring: Substring] = [:]
        var out: [Substring] = []
        for line in lines {
            // strace pads thread ids to five columns.
            let padded = line.drop { $0 == " " }
            let thread = padded.prefix { $0 != " " }
            let call = padded.dropFirst(thread.count).drop { $0 == " " }
            if call.hasSuffix(" <unfinished ...>") {
                unfinished[thread] = line.dropLast(" <unfinished ...>".count)
            } else if call.hasPrefix("<... "), let end = call.range(of: " resumed>"), let start = unfinished.removeValue(forKey: thread) {
                out.append(Substring(start + call[end.upperBound...]))
            } else {
                out.append(line)
            }
        }
        return out
    }

    /// Whether `tracer` traces every thread of `pid` (TracerPid in each thread's status).
    func everyThread(of pid: pid_t, tracedBy tracer: pid_t) -> Bool {
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
        return !tasks.isEmpty && tasks.allSatisfy { task in
            let status = (try? String(contentsOfFile: "/proc/\(pid)/task/\(task)/status", encoding: .utf8)) ?? ""
            return status.contains("TracerPid:\t\(tracer)\n")
        }
    }
}

/// The strace harness's joining of calls split across threads (a split `linkat` went uncounted,
/// and `CreateCostTests` failed one CI run in several).
final class SyscallTraceJoinTests: XCTestCase {
    func testASplitCallIsJoinedAtItsEnd() {
        let lines: [Substring] = [
            "12900 openat(12, \".\", O_RDWR|O_CLOEXEC|O_TMPFILE, 0644 <unfinished ...>",
            "12890 linkat(48, \"\", 16, \"a\", AT_EMPTY_PATH) = 0",
            " 1290 linkat(49, \"\", 16, \"b\", AT_EMPTY_PATH <unfinished ...>",
            "12900 <... openat resumed>)             = 49",
            " 1290 <... linkat resumed>) = 0",
        ]
        XCTAssertEqual(IntegrationTestCase.joiningSplitCalls(lines), [
            "12890 linkat(48, \"\", 16, \"a\", AT_EMPTY_PATH) = 0",
            "12900 openat(12, \".\", O_RDWR|O_CLOEXEC|O_TMPFILE, 0644)             = 49",
            " 1290 linkat(49, \"\", 16, \"b\", AT_EMPTY_PATH) = 0",
        ])
    }
}
