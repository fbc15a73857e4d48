import Foundation
import XCTest
import CMKCrypto
import CMKSocketKMS
import CMKUnixSocket

/// A SoftHSM2 token directory of its own: `root/softhsm2.conf` pointing `directories.tokendir`
/// at `root/tokens`, with tokens made by `softhsm2-util --init-token`. Processes find it through
/// `SOFTHSM2_CONF` (SoftHSM reads it once, at C_Initialize).
struct SoftHSMTokens {
    static let module = "/usr/lib/softhsm/libsofthsm2.so"
    static let userPIN = "4321"
    static let soPIN = "12345678"
    let root: String
    var config: String { root + "/softhsm2.conf" }
    var environment: [String: String] { ["SOFTHSM2_CONF": config] }

    /// Makes `root` (0700) and its config.
    init(root: String) throws {
        self.root = root
        try FileManager.default.createDirectory(atPath: root + "/tokens", withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o700])
        let text = "directories.tokendir = \(root)/tokens\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n"
        try text.write(toFile: config, atomically: true, encoding: .utf8)
    }

    /// Initializes a new token labelled `label` in the first free slot.
    func initToken(_ label: String, logDir: String) throws {
        let r = Shell.run("/usr/bin/env", ["SOFTHSM2_CONF=\(config)", "softhsm2-util", "--init-token", "--free", "--label", label,
                                           "--so-pin", Self.soPIN, "--pin", Self.userPIN], timeout: 60, logDir: logDir)
        guard r.succeeded else { throw FixtureError("softhsm2-util --init-token failed: \(r)") }
    }

    /// Writes `pin` (plus a newline) to `path`, mode 0600.
    static func writePINFile(_ path: String, pin: String = userPIN) throws {
        try (pin + "\n").write(toFile: path, atomically: true, encoding: .utf8)
        chmod(path, 0o600)
    }

    /// `pin` as the provider takes it.
    func pin(_ s: String = SoftHSMTokens.userPIN) -> SecretBytes { Array(s.utf8).withUnsafeBytes { SecretBytes(copying: $0) } }

    /// The token the in-process PKCS#11 tests share (the contract suite, PKCS11ProviderTests).
    static let contractToken = "cmkfs-contract"
    /// A token no test logs in to, so a wrong PIN meets C_Login for real.
    static let probeToken = "cmkfs-pin-probe"

    /// The token directory of the test process itself, with `contractToken` and `probeToken`,
    /// made on first use and removed when the process exits. One for the whole process because
    /// SoftHSM reads SOFTHSM2_CONF once, at the process's one C_Initialize: a second directory
    /// made later would never be seen.
    static let inProcess: Result<SoftHSMTokens, any Error> = {
        let root = "/tmp/cmkfs-hsm-\(UUID().uuidString.prefix(8).lowercased())"
        do {
            let t = try SoftHSMTokens(root: root)
            try t.initToken(contractToken, logDir: root)
            try t.initToken(probeToken, logDir: root)
            setenv("SOFTHSM2_CONF", t.config, 1)
            atexit { if case .success(let t) = SoftHSMTokens.inProcess { try? FileManager.default.removeItem(atPath: t.root) } }
            return .success(t)
        } catch {
            try? FileManager.default.removeItem(atPath: root)
            return .failure(error)
        }
    }()
}

/// A `cmkfs-kms serve` process started by a test, stopped (or killed) by `stop()` in tearDown.
final class KMSProcess {
    static let binary: String = {
        URL(fileURLWithPath: MountFixture.binary).deletingLastPathComponent().appendingPathComponent("cmkfs-kms").path
    }()

    let socket: String
    let state: String
    let logPath: String
    /// Where the keys are besides `--state`: the token flags of a KMS in front of an HSM.
    let keyStore: [String]
    /// Added to the environment of the server and the key commands (SOFTHSM2_CONF).
    let environment: [String: String]
    private(set) var process: Process?

    init(socket: String, state: String, logPath: String, keyStore: [String] = [], environment: [String: String] = [:]) {
        self.socket = socket
        self.state = state
        self.logPath = logPath
        self.keyStore = keyStore
        self.environment = environment
    }

    /// A KMS whose master keys are in a new SoftHSM2 token made under `root` (its PIN in a file there).
    static func onToken(socket: String, state: String, logPath: String, root: String, logDir: String) throws -> KMSProcess {
        let tokens = try SoftHSMTokens(root: root)
        try tokens.initToken("cmkfs-kms-hsm", logDir: logDir)
        let pinFile = root + "/pin"
        try SoftHSMTokens.writePINFile(pinFile)
        return KMSProcess(socket: socket, state: state, logPath: logPath,
                          keyStore: ["--pkcs11-module", SoftHSMTokens.module, "--token", "cmkfs-kms-hsm", "--pin-file", pinFile],
                          environment: tokens.environment)
    }

    var pid: pid_t? { process.map { $0.processIdentifier } }

    /// Starts the server with `faults` flags and waits (≤ 60 s) until it answers a ping.
    func start(_ faults: [String] = []) throws {
        guard FileManager.default.isExecutableFile(atPath: Self.binary) else { throw FixtureError("no cmkfs-kms at \(Self.binary)") }
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Self.binary)
        p.arguments = ["serve", "--socket", socket, "--state", state] + keyStore + faults
        if !environment.isEmpty { p.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 } }
        p.standardInput = FileHandle(forReadingAtPath: "/dev/null")
        let log = FileHandle(forWritingAtPath: logPath)!
        log.seekToEndOfFile()
        p.standardOutput = log
        p.standardError = log
        try p.run()
        try? log.close()
        process = p
        let client = SocketKMSProvider(socketPath: socket, timeoutMilliseconds: 1000)
        let ready = waitUntil(deadline: 60) {
            guard p.isRunning, FileManager.default.fileExists(atPath: socket) else { return !p.isRunning }
            // A refusing server still answers (with a refusal): that is "ready" too.
            if (try? client.ping()) != nil { return true }
            // A faulty KMS may not answer pings, but it must accept connections: the socket
            // file exists from bind(), before listen() (a race under load).
            guard faults.isEmpty == false else { return false }
            return (try? UnixSocket.connect(socket, timeoutMilliseconds: 1000)) != nil
        }
        guard p.isRunning else { throw FixtureError("cmkfs-kms exited: \(output())") }
        guard ready else { throw FixtureError("cmkfs-kms did not become ready on \(socket): \(output())") }
    }

    func output() -> String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    func signal(_ sig: Int32) { if let pid, process?.isRunning == true { kill(pid, sig) } }

    /// SIGSTOP, then waits (≤ 30 s) until the kernel reports the process stopped: signal delivery
    /// is asynchronous, and a request answered in between would make a test pass by luck.
    func pause() {
        signal(SIGSTOP)
        guard let pid else { return }
        waitUntil(deadline: 30, interval: 0.001) {
            guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") else { return false }
            return stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).hasPrefix("T")
        }
    }

    /// SIGKILL and reap (what "the KMS host died" looks like).
    func kill9() {
        signal(SIGCONT)
        signal(SIGKILL)
        process?.waitUntilExit()
    }

    /// Stops the server whatever its state (paused too); waits at most ~30 s (a loaded machine is
    /// slow, and a kill is reported as a test failure), then SIGKILLs.
    /// Returns a problem description if it had to force it.
    @discardableResult
    func stop() -> String? {
        guard let p = process, p.isRunning else { return nil }
        signal(SIGCONT)
        signal(SIGTERM)
        waitUntil(deadline: 30, interval: 0.01) { !p.isRunning }
        if p.isRunning {
            kill(p.processIdentifier, SIGKILL)
            p.waitUntilExit()
            return "cmkfs-kms \(p.processIdentifier) ignored SIGTERM; killed it"
        }
        return nil
    }

    /// `cmkfs-kms audit show --json --state STATE ARGS`: the KMS's own records, parsed.
    func auditRecords(_ args: [String] = [], logDir: String) throws -> [[String: Any]] {
        let r = Shell.run(Self.binary, ["audit", "show", "--json", "--state", state] + args, timeout: 30, logDir: logDir)
        guard r.succeeded else { throw FixtureError("cmkfs-kms audit show failed: \(r)") }
        return try r.stdout.split(separator: "\n").map {
            guard let o = try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] else { throw FixtureError("not JSON: \($0)") }
            return o
        }
    }

    /// Runs `cmkfs-kms ARGS --state STATE` (the customer's key commands).
    @discardableResult
    func keyCommand(_ args: [String], logDir: String) -> ShellResult {
        Shell.run("/usr/bin/env", environment.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
                  + [Self.binary, "key"] + args + ["--state", state] + keyStore, timeout: 30, logDir: logDir)
    }
}

/// Base of the tests whose volume lives on a `cmkfs-kms` process they start: the KMS is
/// stopped after the fixture has unmounted everything (a mount still using it would otherwise
/// see it vanish), and a KMS that does not stop fails the test.
class SocketKMSTestCase: IntegrationTestCase {
    override var mountsInSetUp: Bool { false }

    var kms: KMSProcess?
    var pvol: String { fx.root + "/pvol" }

    override func tearDown() {
        let kms = self.kms
        super.tearDown()
        if let problem = kms?.stop() { XCTFail(problem) }
        self.kms = nil
    }
}
