import XCTest
import Glibc
import Synchronization
import CMKSystem

/// Signals the test's handler has run.
private let handledSignals = Atomic<Int>(0)

/// The EINTR rule: a call cut short by a signal is made again, so the caller sees its result.
final class RetryTests: XCTestCase {
    /// A reader blocked in read(2) on a pipe gets SIGUSR1 (a handler without SA_RESTART, so the
    /// kernel returns EINTR); then a byte arrives. Without the retry the read throws EINTR.
    func testReadInterruptedBySignalIsRetried() throws {
        var action = sigaction()
        action.__sigaction_handler.sa_handler = { _ in handledSignals.add(1, ordering: .sequentiallyConsistent) }
        action.sa_flags = 0
        var old = sigaction()
        XCTAssertEqual(sigaction(SIGUSR1, &action, &old), 0)
        defer { sigaction(SIGUSR1, &old, nil) }

        var ends: [Int32] = [0, 0]
        XCTAssertEqual(pipe(&ends), 0)
        let reader = FileDescriptor(adopting: ends[0]), writer = FileDescriptor(adopting: ends[1])
        let readFD = reader.descriptor
        let outcome = Mutex<Result<Int, SystemError>?>(nil)
        let thread = Mutex<pthread_t?>(nil)
        let done = expectation(description: "read returned")
        Thread {
            thread.withLock { $0 = pthread_self() }
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1, alignment: 1)
            defer { buffer.deallocate() }
            let result: Result<Int, SystemError>
            do throws(SystemError) { result = .success(try readFD.read(into: buffer)) } catch { result = .failure(error) }
            outcome.withLock { $0 = result }
            done.fulfill()
        }.start()

        try waitUntilBlockedInRead(fd: readFD.rawValue)
        let target = try XCTUnwrap(thread.withLock { $0 })
        let before = handledSignals.load(ordering: .sequentiallyConsistent)
        XCTAssertEqual(pthread_kill(target, SIGUSR1), 0)
        let deadline = Date().addingTimeInterval(10)
        while handledSignals.load(ordering: .sequentiallyConsistent) == before && Date() < deadline { usleep(1000) }
        XCTAssertGreaterThan(handledSignals.load(ordering: .sequentiallyConsistent), before, "the signal was handled")
        // The handler ran and the read was made again: the thread is back in read(2).
        try waitUntilBlockedInRead(fd: readFD.rawValue)
        var byte: UInt8 = 7
        _ = try withUnsafeBytes(of: &byte) { try writer.descriptor.write($0) }
        wait(for: [done], timeout: 10)
        XCTAssertEqual(try outcome.withLock { try $0?.get() }, 1)
    }

    /// Polls /proc until some thread of this process sits in read(2) on `fd`.
    private func waitUntilBlockedInRead(fd: Int32) throws {
        #if arch(x86_64)
        let readNumber = "0"
        #else
        let readNumber = "63"
        #endif
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline {
            for task in try FileManager.default.contentsOfDirectory(atPath: "/proc/self/task") {
                let fields = ((try? String(contentsOfFile: "/proc/self/task/\(task)/syscall", encoding: .utf8)) ?? "")
                    .split(separator: " ")
                if fields.count > 1, fields[0] == readNumber, fields[1] == "0x" + String(fd, radix: 16) { return }
            }
            usleep(1000)
        }
        XCTFail("no thread blocked in read(\(fd)) within 10 s")
    }
}
