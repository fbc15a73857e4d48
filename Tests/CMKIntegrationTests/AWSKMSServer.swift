import Foundation
import Glibc
import XCTest
import CMKAWSKMS
import CMKCrypto
import CMKHTTP

/// moto's KMS server (`moto_server`) on a free 127.0.0.1 port, behind the fault layer
/// (Tests/Servers/aws-kms-faults.py) that checks signatures, refuses disabled keys as AWS does,
/// and injects throttling, denial and a hung server on demand. `stop()` ends both, and tearDown
/// calls it even when the test failed.
final class AWSKMSServer {
    /// The test credentials the fault layer accepts (never real AWS keys).
    static let accessKeyID = "AKIDCMKFSTEST"
    static let secretAccessKey = "cmkfs-test-secret/not-a-real-key"
    static let region = "us-east-1"

    /// Where scripts/install-deps.sh puts moto: `$CMKFS_TEST_VENV/bin/moto_server`, else PATH.
    static var motoBinary: String? {
        let venv = ProcessInfo.processInfo.environment["CMKFS_TEST_VENV"] ?? "/opt/cmkfs-test-venv"
        let candidates = [venv + "/bin/moto_server"] + (ProcessInfo.processInfo.environment["PATH"] ?? "")
            .split(separator: ":").map { "\($0)/moto_server" }
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    static var faultScript: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Servers/aws-kms-faults.py").path
    }

    let logDir: String
    private var moto: Process?
    private var proxy: Process?
    private(set) var motoPort = 0
    private(set) var port = 0
    /// The endpoint cmkfs talks to (the fault layer).
    var endpoint: String { "http://127.0.0.1:\(port)" }
    /// moto itself, bypassing the fault layer (the key owner's console).
    var motoEndpoint: String { "http://127.0.0.1:\(motoPort)" }

    /// The environment a cmkfs process needs to sign as the test principal.
    var credentialEnvironment: [String: String] {
        ["AWS_ACCESS_KEY_ID": Self.accessKeyID, "AWS_SECRET_ACCESS_KEY": Self.secretAccessKey]
    }

    init(logDir: String) { self.logDir = logDir }

    /// Starts moto and the fault layer and waits (≤ 30 s) until both answer.
    func start() throws {
        guard let binary = Self.motoBinary else {
            throw FixtureError("moto_server not found: run scripts/install-deps.sh (it installs moto[server] into /opt/cmkfs-test-venv)")
        }
        motoPort = try Self.freePort()
        moto = try launch(binary, ["-H", "127.0.0.1", "-p", String(motoPort)], log: logDir + "/moto.log")
        guard waitUntil(deadline: 30, interval: 0.05, { self.answers(self.motoEndpoint) || self.moto?.isRunning != true }),
              moto?.isRunning == true else {
            throw FixtureError("moto_server did not start: \(log("moto.log"))")
        }
        try startProxy()
    }

    /// (Re)starts the fault layer on its old port (after `stopProxy`, "the server is back").
    func startProxy() throws {
        let readyFile = logDir + "/proxy.port"
        try? FileManager.default.removeItem(atPath: readyFile)
        proxy = try launch(Shell.python, [Self.faultScript, String(port), motoEndpoint], log: logDir + "/proxy.log",
                           environment: ["CMKFS_TEST_AWS_KEYS": "\(Self.accessKeyID):\(Self.secretAccessKey)"])
        var found = 0
        _ = waitUntil(deadline: 20, interval: 0.02) {
            if let text = try? String(contentsOfFile: self.logDir + "/proxy.log", encoding: .utf8),
               let line = text.split(separator: "\n").first(where: { $0.hasPrefix("ready ") }), let p = Int(line.dropFirst(6)) {
                found = p
                return true
            }
            return self.proxy?.isRunning != true
        }
        guard found > 0 else { throw FixtureError("the AWS KMS fault layer did not start: \(log("proxy.log"))") }
        port = found
    }

    /// Sets faults: `throttle` (next N crypto calls), `deny` (AccessDeniedException), `stall` (never answer).
    func fault(_ settings: [String: Any]) throws {
        _ = try Self.send(HTTPRequest(method: .post, url: endpoint + "/__fault",
                                      body: HTTPBody(try JSONSerialization.data(withJSONObject: settings))))
    }

    /// Calls per KMS operation seen by the fault layer.
    func stats() throws -> [String: Int] {
        let data = try Self.send(HTTPRequest(method: .get, url: endpoint + "/__stats"))
        return (try JSONSerialization.jsonObject(with: data) as? [String: Int]) ?? [:]
    }

    /// The key owner's own call, straight to moto (DisableKey, ScheduleKeyDeletion, CreateKey…).
    @discardableResult
    func owner(_ op: String, _ payload: [String: Any]) throws -> [String: Any] {
        let request = HTTPRequest(method: .post, url: motoEndpoint + "/", headers: [
            (name: "Content-Type", value: "application/x-amz-json-1.1"), (name: "X-Amz-Target", value: "TrentService.\(op)"),
            (name: "Authorization", value: "AWS4-HMAC-SHA256 Credential=owner/20200101/\(Self.region)/kms/aws4_request, SignedHeaders=host, Signature=0"),
        ], body: HTTPBody(try JSONSerialization.data(withJSONObject: payload)))
        let response = try Self.client.send(request)
        let data = Data(response.body.bytes)
        guard response.status == 200 else { throw FixtureError("\(op) answered \(response.status): \(String(decoding: data, as: UTF8.self))") }
        return ((try? JSONSerialization.jsonObject(with: data)) as? [String: Any]) ?? [:]
    }

    /// A new KMS key made by the key owner; returns its id.
    func createKey() throws -> String {
        let meta = try owner("CreateKey", ["Description": "cmkfs test"])["KeyMetadata"] as? [String: Any]
        guard let id = meta?["KeyId"] as? String else { throw FixtureError("CreateKey gave no KeyId") }
        return id
    }

    func keyState(_ id: String) throws -> String {
        ((try owner("DescribeKey", ["KeyId": id])["KeyMetadata"] as? [String: Any])?["KeyState"] as? String) ?? "?"
    }

    /// Ends the fault layer only (the "KMS is down" case).
    func stopProxy() { end(&proxy) }

    /// Ends both; returns a problem if one had to be killed.
    @discardableResult
    func stop() -> String? {
        let a = end(&proxy), b = end(&moto)
        return a ?? b
    }

    // MARK: private

    @discardableResult
    private func end(_ process: inout Process?) -> String? {
        guard let p = process else { return nil }
        process = nil
        guard p.isRunning else { return nil }
        kill(p.processIdentifier, SIGCONT)
        p.terminate()
        if waitUntil(deadline: 30, interval: 0.01, { !p.isRunning }) { return nil }
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        return "\(p.executableURL?.lastPathComponent ?? "?") \(p.processIdentifier) ignored SIGTERM; killed it"
    }

    private func launch(_ binary: String, _ arguments: [String], log: String, environment: [String: String] = [:]) throws -> Process {
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: binary)
        p.arguments = arguments
        p.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        p.standardInput = FileHandle(forReadingAtPath: "/dev/null")
        let handle = FileHandle(forWritingAtPath: log)!
        p.standardOutput = handle
        p.standardError = handle
        try p.run()
        try? handle.close()
        return p
    }

    private func log(_ name: String) -> String { (try? String(contentsOfFile: logDir + "/" + name, encoding: .utf8)) ?? "" }

    private func answers(_ url: String) -> Bool {
        (try? Self.client.send(HTTPRequest(method: .get, url: url + "/"))) != nil
    }

    static let client = HTTPClient(configuration: .init(connectTimeoutMilliseconds: 2000, totalTimeoutMilliseconds: 10_000))

    /// One request with a 10 s deadline; any HTTP status is an answer, its body returned.
    static func send(_ request: HTTPRequest) throws -> Data {
        Data(try client.send(request).body.bytes)
    }

    /// A port nothing listens on now.
    static func freePort() throws -> Int { try LoopbackPort.free() }
}

extension AWSKMSServer {
    /// A provider talking to the fault layer as the test principal, with short deadlines.
    func provider(timeoutMilliseconds: Int = 5000, attempts: Int = 5) throws -> AWSKMSProvider {
        let secret = Array(Self.secretAccessKey.utf8).withUnsafeBytes { SecretBytes(copying: $0) }
        let client = HTTPClient(configuration: .init(connectTimeoutMilliseconds: 2000, totalTimeoutMilliseconds: timeoutMilliseconds))
        return try AWSKMSProvider(region: Self.region, endpoint: endpoint,
                                  credentials: AWSCredentials(accessKeyID: Self.accessKeyID, secretAccessKey: secret, source: "the test"),
                                  transport: HTTPKMSTransport(client: client), attempts: attempts, backoffMilliseconds: 20)
    }
}
