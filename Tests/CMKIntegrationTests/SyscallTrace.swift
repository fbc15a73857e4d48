import Foundation
import XCTest

extension IntegrationTestCase {
    /// The lines strace wrote for `syscalls` (its -e trace list) on every thread of the mount
    /// while `body` ran.
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
        return all.dropFirst(before.count).split(separator: "\n")
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
