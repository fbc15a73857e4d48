// audit-record: CPU per audit record of an open (docs/audit-format.md), split into its steps:
// the event's assembly (AuditEvent, user names, file id hex), the path's seal (random nonce,
// AES-256-GCM, base64), the body (JSONLineWriter), the HMAC, the MAC's hex and the line, the
// write(2), and the whole `AuditLog.appendLine` (a real log in --dir). Not a test; run it
// outside `swift test`, on a release build:
//
//     swift build -c release --product audit-record
//     .build/release/audit-record [--calls N] [--rounds R] [--dir DIR] [--only CASE]
//
// Prints the median and minimum µs per call of each case by thread CPU time (the machine is
// shared: CPU time is steadier than wall time).
import Glibc
import BenchSupport
import CMKAudit
import CMKCrypto
import CMKVolume

func run(_ o: BenchOptions) throws {
    let key = try SecretBytes.random(count: 32)
    let seal = try AuditPathSeal(auditKey: key)
    let mac = try HMACSHA256.Keyed(key: key)
    let fileID = try SecureRandom.bytes(16)
    // 64 paths of 20 to 60 bytes, cycled through (the bench's tree: a few directories deep).
    let paths: [String] = (0..<64).map { i in
        "/src/dir-\(i % 7)/sub-\(i % 3)/" + String(repeating: "f", count: 5 + (i * 7) % 31) + ".txt"
    }
    let uid = Int(getuid())
    func event(_ i: Int) -> AuditEvent {
        AuditEvent("open", result: "ok", fileID: hexString(fileID), path: paths[i & 63], keyID: "cmk-0123456789abcdef",
                   keyVersion: 1, cache: "hit", uid: uid, gid: 0, pid: 4242, process: "cat", detail: nil)
            .naming(loginUID: AuditEvent.unsetLoginUID)
    }
    let writer = AuditWriterFields(session: hexString(try SecureRandom.bytes(16)), mountpoint: "/mnt/volume")
    let sealedEvents: [AuditEvent] = try (0..<64).map { i in var e = event(i); e.path = try seal.seal(e.path!); return e }
    let prev = String(repeating: "a", count: 64)
    let bodies = (0..<64).map { i in
        AuditRecord.body(seq: UInt64(1000 + i), time: AuditRecord.now(), volumeID: "0123456789abcdef0123456789abcdef",
                         host: "bench-host", prev: prev, sealedEvents[i], writer: writer)
    }
    var out = [UInt8](repeating: 0, count: 32)
    let constants = AuditRecordConstants(volumeID: "0123456789abcdef0123456789abcdef", host: "bench-host", writer: writer)
    let prepareds = sealedEvents.map { AuditRecord.prepare($0, path: $0.path, constants) }

    let directory = o.directory + "/audit-record-\(getpid())"
    let log = try AuditLog.open(directory: directory, key: key, volumeID: "0123456789abcdef0123456789abcdef",
                                checkpoints: nil, mountpoint: "/mnt/volume")
    let file = open(directory + "/raw.log", O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
    defer {
        try? log.close()
        close(file)
        system("chattr -R -f -a '\(directory)'; rm -rf '\(directory)'")
    }

    let calls = o.calls
    var sink = 0
    let allCases: [(String, () throws -> Void)] = [
        ("event assembly", { for i in 0..<calls { sink &+= event(i).path!.utf8.count } }),
        ("path seal", { for i in 0..<calls { sink &+= try seal.seal(paths[i & 63]).utf8.count } }),
        ("body (reference)", { for i in 0..<calls {
            sink &+= AuditRecord.body(seq: UInt64(i), time: AuditRecord.now(), volumeID: "0123456789abcdef0123456789abcdef",
                                      host: "bench-host", prev: prev, sealedEvents[i & 63], writer: writer).count } }),
        ("prepare", { for i in 0..<calls { sink &+= AuditRecord.prepare(sealedEvents[i & 63], path: sealedEvents[i & 63].path, constants).bytes.count } }),
        ("line (prepared)", { for i in 0..<calls {
            sink &+= try AuditRecord.line(seq: UInt64(i), time: AuditRecord.clock(), prev: prev, prepareds[i & 63], mac: mac, key: key).line.count } }),
        ("time", { for _ in 0..<calls { sink &+= AuditRecord.now().utf8.count } }),
        ("hmac", { for i in 0..<calls {
            try bodies[i & 63].withUnsafeBytes { b in try out.withUnsafeMutableBytes { m in try mac.mac(b, into: m) } }
            sink &+= Int(out[0]) } }),
        ("hmac+finish (ref.)", { for i in 0..<calls { sink &+= try AuditRecord.line(body: bodies[i & 63], mac: mac).line.count } }),
        ("write(2)", { for i in 0..<calls { sink &+= bodies[i & 63].withUnsafeBytes { write(file, $0.baseAddress, $0.count) } } }),
        ("appendLine", { for i in 0..<calls { sink &+= try log.appendLine(event(i)).count } }),
    ]
    let cases = allCases.filter { o.only.isEmpty || $0.0.contains(o.only) }
    var results = [[Double]](repeating: [], count: cases.count)
    for _ in 0..<o.rounds {
        for (i, c) in cases.enumerated() {
            let t0 = cpuNow()
            try c.1()
            results[i].append((cpuNow() - t0) * 1e6 / Double(calls))
        }
    }
    print("case                 median µs   min µs   (CPU time per call, \(o.rounds) rounds of \(calls))")
    for (i, c) in cases.enumerated() {
        print(c.0.padding(toLength: 20, withPad: " ", startingAt: 0), fmt(median(results[i])).padding(toLength: 11, withPad: " ", startingAt: 0), fmt(results[i].min()!))
    }
    if sink == 42 { print("") }
}

let options = BenchOptions.parse(tool: "audit-record", calls: 50_000, directory: "/var/tmp")
do { try run(options) } catch { print("audit-record: \(error)"); exit(1) }
