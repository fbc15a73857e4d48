import Foundation
import Glibc
import Synchronization
import CMKCrypto
import CMKKeys
import CMKSocketKMS
import CMKSystem
import CMKUnixSocket

// The socket KMS: the server answering bytes from a peer, and the client reading the bytes a
// KMS answers. Both run over real Unix sockets in this process, through public API only, so
// the framing (WireFrame.receive) is fuzzed along with the message decoding.

/// The key every server seed names: version 1 enabled, 2 disabled, 3 destroyed.
let fuzzKMSKeyID = "mk-f0220000000000ff"
/// The same key under a one-letter id (any safe name is a key id to the KMS): requests naming
/// it leave the most room in a frame for the other fields.
let fuzzKMSShortKeyID = "k"
private let kmsState = scratchDirectory + "/kms-state"

/// The keystore file of the fixed key, in the documented format (Sources/CMKKeys/KeystoreFile.swift).
private let kmsKeyFileBytes: [UInt8] = {
    func be32(_ v: Int) -> [UInt8] { [UInt8(v >> 24 & 0xFF), UInt8(v >> 16 & 0xFF), UInt8(v >> 8 & 0xFF), UInt8(v & 0xFF)] }
    var out = Array("CMKK".utf8) + [0, 1, 0, 0] + be32(3)
    for (version, state) in [(1, 0), (2, 1), (3, 2)] as [(Int, UInt8)] {
        out += be32(version) + [state, 0, 0, 0] + [UInt8](repeating: 0, count: 8)
        out += [UInt8](repeating: state == 2 ? 0 : UInt8(0x30 + version), count: 32)
    }
    return out
}()

/// Puts the keystore back as it was: a request may have disabled, destroyed or created keys.
private func resetKeystore() {
    for name in (try? FileManager.default.contentsOfDirectory(atPath: kmsState)) ?? [] where name != ".lock" {
        try? Descriptor.cwd.unlink(kmsState + "/" + name)
    }
    // A new inode, so the server's SimulatedKMS re-reads the file instead of trusting its cache.
    for id in [fuzzKMSKeyID, fuzzKMSShortKeyID] {
        let file = kmsState + "/\(id).key"
        writeFile(file + ".new", kmsKeyFileBytes)
        try? Descriptor.cwd.rename(file + ".new", to: file, in: .cwd)
    }
}

/// A `KMSServer` over the fixed keystore, started once per process on a thread of its own.
private let kmsServerSocket: String = {
    try? Descriptor.cwd.mkdir(kmsState, mode: 0o700)
    resetKeystore()
    let path = scratchDirectory + "/kms.sock"
    do {
        let server = try KMSServer(socketPath: path, kms: try SimulatedKMS(directory: kmsState, create: false), faults: .init())
        Thread.detachNewThread { server.run() }
    } catch {
        fatalError("fuzz harness: cannot start the KMS server: \(error)")
    }
    return path
}()

/// Sends one connection's worth of bytes to the KMS server and checks what comes back. The
/// first byte picks the framing: odd, the rest is one request body and the harness adds the
/// length prefix; even, the rest goes out as is (length prefixes and all). After the bytes the
/// harness shuts down its side; the server must answer every whole frame with one well-formed
/// response (a status byte of the protocol, and for a refusal one string and nothing else),
/// then close, within 5 s.
public func fuzzKMSServer(_ data: [UInt8]) throws(FuzzViolation) {
    var r = ByteReader(data)
    let framed = r.u8() & 1 == 1
    let body = r.rest
    let answer = try kmsServerExchange(framed ? be32(body.count) + body : body)
    var responses = 0
    var at = 0
    while at < answer.count {
        guard answer.count - at >= 5 else { throw FuzzViolation("kms-server", "a response shorter than a frame") }
        let length = Int(answer[at]) << 24 | Int(answer[at + 1]) << 16 | Int(answer[at + 2]) << 8 | Int(answer[at + 3])
        guard length >= 1, length <= 65536, at + 4 + length <= answer.count else {
            throw FuzzViolation("kms-server", "a response frame of \(length) bytes")
        }
        let status = answer[at + 4]
        guard status <= 9 else { throw FuzzViolation("kms-server", "unknown status \(status)") }
        if status != 0 {
            let messageLength = length >= 3 ? Int(answer[at + 5]) << 8 | Int(answer[at + 6]) : -1
            guard messageLength + 3 == length else { throw FuzzViolation("kms-server", "a refusal that is not one string") }
        }
        at += 4 + length
        responses += 1
    }
    if framed && body.count <= 65536 && responses != 1 {
        throw FuzzViolation("kms-server", "one request got \(responses) responses")
    }
}

/// Sends `stream` on a fresh connection to the fuzz process's KMS server (over the fixed
/// keystore, reset first), shuts down the sending side and returns every byte the server
/// answered before closing. For the fuzz target and its regression tests.
public func kmsServerExchange(_ stream: [UInt8]) throws(FuzzViolation) -> [UInt8] {
    let path = kmsServerSocket
    resetKeystore()
    let connection: FileDescriptor
    do { connection = try UnixSocket.connect(path, timeoutMilliseconds: 5000) } catch {
        throw FuzzViolation("kms-server", "cannot connect to the server: \(error)")
    }
    let fd = connection.descriptor
    try? fd.sendAll(stream)
    try? fd.shutdown(SHUT_WR)
    var answer: [UInt8] = []
    while true {
        let chunk: [UInt8]
        do { chunk = try fd.receive(upTo: 65536) } catch {
            if error.errno == .EAGAIN { throw FuzzViolation("kms-server", "no answer and no close within 5 s (hang)") }
            break  // ECONNRESET: the server closed with bytes unread (an oversized frame)
        }
        if chunk.isEmpty { break }
        answer += chunk
    }
    return answer
}

private func be32(_ v: Int) -> [UInt8] { [UInt8(v >> 24 & 0xFF), UInt8(v >> 16 & 0xFF), UInt8(v >> 8 & 0xFF), UInt8(v & 0xFF)] }
private func be16(_ v: Int) -> [UInt8] { [UInt8(v >> 8 & 0xFF), UInt8(v & 0xFF)] }
private func field(_ bytes: [UInt8]) -> [UInt8] { be16(bytes.count) + bytes }
private func field(_ text: String) -> [UInt8] { field(Array(text.utf8)) }

func kmsServerSeeds() -> [(name: String, bytes: [UInt8])] {
    let key = field(fuzzKMSKeyID)
    let context = field([UInt8](repeating: 7, count: 16)) + field([UInt8](repeating: 8, count: 16))
    // A real EDEK of the fixed key's version 1 over `context`, so unwrap succeeds.
    let material = [UInt8](repeating: 0x31, count: 32).withUnsafeBytes { SecretBytes(copying: $0) }
    let aad = WrapContext(volumeID: [UInt8](repeating: 7, count: 16), fileID: [UInt8](repeating: 8, count: 16))
        .associatedData(for: KeyRef(keyID: fuzzKMSKeyID, version: 1))
    let dek = [UInt8](repeating: 0x44, count: 32)
    let edek = try! material.withUnsafeBytes { k in try dek.withUnsafeBytes { d in try AESGCM().sealRecord(key: k, aad: aad, plaintext: d) } }
    let requests: [(String, [UInt8])] = [
        ("ping", [1, 0]),
        ("create-key", [1, 1]),
        ("create-version", [1, 2] + key),
        ("wrap", [1, 3] + key + be32(1) + context + field(dek)),
        ("unwrap", [1, 4] + key + be32(1) + context + field(edek)),
        ("unwrap-disabled", [1, 4] + key + be32(2) + context + field(edek)),
        ("state", [1, 5] + key + be32(3)),
        ("set-state", [1, 6] + key + be32(1) + [1]),
        ("bad-version", [2, 0]),
    ]
    var seeds = requests.map { (name: $0.0, bytes: [1] + $0.1) }
    // Raw streams: two requests on one connection, and a length prefix past the limit.
    seeds.append(("two-frames", [0] + be32(2) + [1, 0] + be32(2 + key.count + 4) + [1, 5] + key + be32(1)))
    seeds.append(("oversized-frame", [0] + be32(70_000) + [1, 0]))
    return seeds
}

// MARK: client

/// What the fake KMS answers next (the rest of the current input).
private let nextAnswer = Mutex<[UInt8]>([])

/// A fake KMS: reads one request frame per connection, answers with `nextAnswer`, closes.
private let fakeKMSSocket: String = {
    let path = scratchDirectory + "/fake-kms.sock"
    // Served until the process ends: the listener is never closed.
    let listener: Descriptor
    do { listener = Descriptor(rawValue: try UnixSocket.listen(path).release()) } catch { fatalError("fuzz harness: cannot listen on \(path): \(error)") }
    Thread.detachNewThread {
        while true {
            guard let connection = try? listener.accept() else { continue }
            let fd = connection.descriptor
            try? fd.setTimeouts(milliseconds: 5000)
            var header = [UInt8](repeating: 0, count: 4)
            if recvAll(fd, &header) {
                let length = Int(header[0]) << 24 | Int(header[1]) << 16 | Int(header[2]) << 8 | Int(header[3])
                var body = [UInt8](repeating: 0, count: min(length, 1 << 20))
                if recvAll(fd, &body) {
                    let answer = nextAnswer.withLock { $0 }
                    try? fd.sendAll(answer)
                }
            }
        }
    }
    return path
}()

private func recvAll(_ fd: Descriptor, _ buffer: inout [UInt8]) -> Bool {
    var at = 0
    while at < buffer.count {
        let n = buffer.withUnsafeMutableBytes { raw in
            (try? Result { () throws(SystemError) in try fd.receive(into: UnsafeMutableRawBufferPointer(rebasing: raw[at...])) }.get()) ?? -1
        }
        guard n > 0 else { return false }
        at += n
    }
    return true
}

/// One call of `SocketKMSProvider` answered with fuzzed bytes. The first byte picks the call
/// (ping, create_key, create_version, wrap, unwrap, state, set_state) and, in bit 7, whether the
/// harness adds the length prefix (set) or the rest is the raw stream. Any answer must end in a
/// value or a `KeyProviderError`, never a crash or a wait past the timeout.
public func fuzzKMSClient(_ data: [UInt8]) throws(FuzzViolation) {
    let path = fakeKMSSocket
    var r = ByteReader(data)
    let selector = r.u8()
    let body = r.rest
    nextAnswer.withLock { $0 = selector & 0x80 != 0 ? be32(body.count) + body : body }
    let provider = SocketKMSProvider(socketPath: path, timeoutMilliseconds: 5000)
    let key = KeyRef(keyID: fuzzKMSKeyID, version: 1)
    let context = WrapContext(volumeID: [UInt8](repeating: 7, count: 16), fileID: [UInt8](repeating: 8, count: 16))
    let start = Date()
    switch selector & 0x7F % 7 {
    case 0: _ = try? provider.ping()
    case 1: _ = try? provider.createKey()
    case 2: _ = try? provider.createVersion(of: fuzzKMSKeyID)
    case 3: _ = try? provider.wrap(SecretBytes.random(count: 32), with: key, context: context)
    case 4:
        if let dek = try? provider.unwrap([UInt8](repeating: 1, count: 60), with: key, context: context), dek.count == 0 {
            throw FuzzViolation("kms-client", "unwrap returned an empty key")
        }
    case 5: _ = try? provider.state(of: key)
    default: _ = try? provider.setState(.disabled, of: key)
    }
    guard Date().timeIntervalSince(start) < 4 else { throw FuzzViolation("kms-client", "a call took as long as the timeout (hang)") }
}

func kmsClientSeeds() -> [(name: String, bytes: [UInt8])] {
    [("ping-ok", [0x80, 0]),
     ("create-key-ok", [0x81, 0] + field(fuzzKMSKeyID) + be32(1)),
     ("create-version-ok", [0x82, 0] + field(fuzzKMSKeyID) + be32(2)),
     ("wrap-ok", [0x83, 0] + field([UInt8](repeating: 9, count: 60))),
     ("unwrap-ok", [0x84, 0] + field([UInt8](repeating: 0x44, count: 32))),
     ("state-disabled", [0x85, 0, 1]),
     ("set-state-refused", [0x86, 2] + field("key disabled")),
     ("not-found", [0x84, 1] + field("no such key")),
     ("raw-short-frame", [0x04, 0, 0, 0, 9, 0]),
     ("raw-oversized", [0x00, 0xFF, 0xFF, 0xFF, 0xFF])]
}
