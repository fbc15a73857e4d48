import Foundation
import XCTest

/// Base class of the integration tests: a fresh `MountFixture` per test, its volume initialized
/// and (unless `mountsInSetUp` is false) mounted; everything torn down in `tearDown`, whether the
/// test passed, failed or threw.
///
/// The test process itself never opens a path under the mountpoint: every access to the mount
/// goes through a child process with a timeout, so a hung daemon fails a test instead of hanging
/// the suite.
class IntegrationTestCase: XCTestCase {
    private(set) var fx: MountFixture!

    /// Whether `setUp` mounts the volume (the CLI error tests mount what they need themselves).
    var mountsInSetUp: Bool { true }

    /// The FUSE transport the fixture mounts with (nil: the default, /dev/fuse). A subclass that
    /// says `io_uring` runs its parent's tests over FUSE over io_uring (`RingTransportSuites`):
    /// the kernel's switch is turned on for the test and put back after it, and the test fails
    /// unless requests were really served through the rings.
    var fuseTransport: String? { nil }
    private var ringSwitchBefore: String?
    /// This test's failures, printed again after the mount log in `tearDown`: a long log would
    /// otherwise push them out of an excerpt that keeps only a run's end (CI's does).
    private var failures: [String] = []

    var mnt: String { fx.mnt }
    var vol: String { fx.vol }
    var plain: String { fx.plain }

    override func setUpWithError() throws {
        try super.setUpWithError()
        continueAfterFailure = true
        fx = try MountFixture()
        if let fuseTransport {
            ringSwitchBefore = try KernelRingSwitch.turnOn()
            fx.mountArguments = ["--fuse-transport", fuseTransport]
        }
        do {
            try fx.initVolume()
            if mountsInSetUp { try fx.mount() }
        } catch {
            _ = fx.cleanup()
            fx = nil
            throw error
        }
    }

    override func recordFailure(withDescription description: String, inFile filePath: String, atLine lineNumber: Int, expected: Bool) {
        failures.append("\((filePath as NSString).lastPathComponent):\(lineNumber): \(description.prefix(2_000))")
        super.recordFailure(withDescription: description, inFile: filePath, atLine: lineNumber, expected: expected)
    }

    override func tearDown() {
        if let fx, fuseTransport == "io_uring", fx.isMounted(fx.mnt) {
            let served = KernelRingSwitch.ringRequests(fx)
            XCTAssertGreaterThan(served, 0, "requests were served through the FUSE rings")
        }
        if let before = ringSwitchBefore {
            KernelRingSwitch.restore(before)
            ringSwitchBefore = nil
        }
        if let fx {
            if (testRun?.totalFailureCount ?? 0) > 0 {
                print("[cmkfs-it] \(name) failed; \(fx.vol)/mount.log:\n\(fx.mountLog())")
                print("[cmkfs-it] \(name): its failures again, after the log:\n" + failures.joined(separator: "\n"))
            }
            for problem in fx.cleanup() { XCTFail("cleanup: \(problem)") }
        }
        fx = nil
        super.tearDown()
    }

    // MARK: commands with assertions

    /// Runs `script` and asserts it succeeds; returns its stdout.
    @discardableResult
    func sh(_ script: String, timeout: TimeInterval = 120, file: StaticString = #filePath, line: UInt = #line) -> String {
        let r = fx.sh(script, timeout: timeout)
        XCTAssertTrue(r.succeeded, "command failed: \(r)", file: file, line: line)
        return r.stdout
    }

    /// Runs `script` and asserts it fails (non-zero exit, not a timeout); returns the result.
    @discardableResult
    func shFails(_ script: String, timeout: TimeInterval = 120, file: StaticString = #filePath, line: UInt = #line) -> ShellResult {
        let r = fx.sh(script, timeout: timeout)
        XCTAssertFalse(r.timedOut, "command timed out: \(r)", file: file, line: line)
        XCTAssertNotEqual(r.status, 0, "command was expected to fail: \(r)", file: file, line: line)
        return r
    }

    /// Runs a python3 program (`code`) with `arguments`; returns the result without asserting.
    func python(_ code: String, _ arguments: [String] = [], timeout: TimeInterval = 120) -> ShellResult {
        let path = fx.logs + "/prog-\(UUID().uuidString.prefix(8)).py"
        _ = FileManager.default.createFile(atPath: path, contents: Data(code.utf8))
        defer { try? FileManager.default.removeItem(atPath: path) }
        return Shell.run(Shell.python, [path] + arguments, timeout: timeout, logDir: fx.logs,
                         label: "python3 <\(code.prefix(60))...> \(arguments.joined(separator: " "))")
    }

    /// Runs a python3 program and asserts it succeeds; returns its stdout.
    @discardableResult
    func py(_ code: String, _ arguments: [String] = [], timeout: TimeInterval = 120,
            file: StaticString = #filePath, line: UInt = #line) -> String {
        let r = python(code, arguments, timeout: timeout)
        XCTAssertTrue(r.succeeded, "python failed: \(r)", file: file, line: line)
        return r.stdout
    }

    // MARK: content helpers

    /// The sha256 of a file, read by a child process.
    func sha256(_ path: String, file: StaticString = #filePath, line: UInt = #line) -> String {
        let out = sh("sha256sum \(Shell.quote(path))", file: file, line: line)
        return String(out.split(separator: " ").first ?? "")
    }

    /// `size` random bytes into `path` (outside the mount).
    func makeRandomFile(_ path: String, size: Int, file: StaticString = #filePath, line: UInt = #line) {
        sh("head -c \(size) /dev/urandom > \(Shell.quote(path))", file: file, line: line)
    }

    /// A listing of the tree under `dir` that two equal trees share on any filesystem: type,
    /// permission bits, size and link count of files, symlink targets, then the sha256 of every
    /// regular file. Modification times are left out (they are checked separately).
    func manifest(_ dir: String, timeout: TimeInterval = 300, file: StaticString = #filePath, line: UInt = #line) -> String {
        sh("""
           cd \(Shell.quote(dir)) || exit 1
           find . -mindepth 1 \\( -type l -printf 'l %p -> %l\\n' \\) -o \\( -type f -printf 'f %m %s %n %p\\n' \\) \
             -o \\( -type d -printf 'd %m %p\\n' \\) -o -printf '%y %m %p\\n' | LC_ALL=C sort || exit 1
           find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum || exit 1
           """, timeout: timeout, file: file, line: line)
    }

    /// Every entry under `dir` (the directory itself included): type, mode, size, path, then the
    /// sha256 of every regular file. Used to prove a failing command changed nothing. The one
    /// exception is `audit/denials.pending`: a refused key use is noted there on purpose, to be
    /// chained into the audit log later (docs/audit-format.md).
    func snapshot(_ dir: String, file: StaticString = #filePath, line: UInt = #line) -> String {
        sh("""
           cd \(Shell.quote(dir)) || exit 1
           find . -path ./audit/denials.pending -prune -o -printf '%y %m %s %p\\n' | LC_ALL=C sort || exit 1
           find . -path ./audit/denials.pending -prune -o -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum || exit 1
           """, file: file, line: line)
    }

    /// Prints one timing line (the suite prints timings, it does not assert speed).
    func report(_ what: String, seconds: Double, bytes: Int? = nil) {
        var text = "[cmkfs-it] \(what): \(String(format: "%.2f", seconds)) s"
        if let bytes, seconds > 0 { text += String(format: " (%.1f MiB/s)", Double(bytes) / 1_048_576 / seconds) }
        print(text)
    }

    /// Runs `script`, asserts success and returns the wall time it took.
    func timed(_ what: String, _ script: String, timeout: TimeInterval = 300, bytes: Int? = nil,
               file: StaticString = #filePath, line: UInt = #line) -> Double {
        let r = fx.sh(script, timeout: timeout)
        XCTAssertTrue(r.succeeded, "\(what) failed: \(r)", file: file, line: line)
        report(what, seconds: r.seconds, bytes: bytes)
        return r.seconds
    }
}

/// Random lower-case hex.
func randomHex(_ count: Int) -> String {
    var g = SystemRandomNumberGenerator()
    return String((0..<count).map { _ in "0123456789abcdef".randomElement(using: &g)! })
}

/// The kernel's FUSE-over-io_uring switch, for the test cases that mount over the rings.
enum KernelRingSwitch {
    static let path = "/sys/module/fuse/parameters/enable_uring"

    /// Turns it on; returns what it was.
    static func turnOn() throws -> String {
        let before = try String(contentsOfFile: path, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        try "Y".write(toFile: path, atomically: false, encoding: .utf8)
        return before
    }

    static func set(_ value: String) throws { try value.write(toFile: path, atomically: false, encoding: .utf8) }

    static func restore(_ value: String) { try? value.write(toFile: path, atomically: false, encoding: .utf8) }

    /// `cmkfs_fuse_requests_total{transport="io_uring"}` of the fixture's live mount.
    static func ringRequests(_ fx: MountFixture, volume: String? = nil) -> UInt64 {
        let r = fx.cmkfs(["metrics", volume ?? fx.vol])
        let line = r.stdout.split(separator: "\n").first { $0.hasPrefix("cmkfs_fuse_requests_total{transport=\"io_uring\"}") }
        return line.flatMap { $0.split(separator: " ").last }.flatMap { UInt64($0) } ?? 0
    }
}
