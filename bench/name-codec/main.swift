// name-codec: CPU per file name encrypted or decrypted (NameCodec: AES-256-SIV, base64url) and per
// DEK wrapped or unwrapped by the embedded KMS (SimulatedKMS: key file stat + pread, AES-256-GCM),
// the per-request crypto of LOOKUP/CREATE/UNLINK/READDIR and of a key-miss OPEN or a CREATE.
// Not a test; run it outside `swift test`, on a release build:
//
//     swift build -c release --product name-codec
//     .build/release/name-codec [--calls N] [--rounds R] [--dir DIR] [--only CASE]
//
// Names are 10 to 40 bytes (the bench's tarball has names of that size). Prints the median and
// minimum µs per call of each case by thread CPU time (the machine is shared: CPU time is
// steadier than wall time).
import Glibc
import BenchSupport
import CMKCrypto
import CMKFormat
import CMKKeys

func run(_ o: BenchOptions) throws {
    let codec = try NameCodec(key: SecretBytes.random(count: AESSIV.keySize))
    let directoryID = try SecureRandom.bytes(16)
    // 64 names of 10 to 40 bytes, cycled through.
    let names: [String] = (0..<64).map { i in
        let length = 10 + (i * 7) % 31
        return String((0..<length).map { j in Character(Unicode.Scalar(UInt8(97 + (i + j) % 26))) })
    }
    let encoded = try names.map { try codec.encrypt($0, directoryID: directoryID).backingName }
    let raw = try names.map { try SecureRandom.bytes(16 + 16 * (1 + $0.utf8.count / 16)) }
    let rawEncoded = raw.map { Base64URL.encode($0) }

    let keystore = o.directory + "/name-codec-kms-\(getpid())"
    let kms = try SimulatedKMS(directory: keystore, create: true)
    defer {
        _ = try? FileManager_remove(keystore)
    }
    let master = try kms.createKey()
    let context = WrapContext(volumeID: try SecureRandom.bytes(16), fileID: try SecureRandom.bytes(16))
    let dek = try SecretBytes.random(count: 32)
    let edek = try kms.wrap(dek, with: master, context: context)

    let calls = o.calls
    var sink = 0
    let allCases: [(String, Int, () throws -> Void)] = [
        ("name encrypt", calls, { for i in 0..<calls { sink &+= try codec.encrypt(names[i & 63], directoryID: directoryID).backingName.utf8.count } }),
        ("name decrypt", calls, { for i in 0..<calls { sink &+= try codec.decrypt(encoded[i & 63], directoryID: directoryID).utf8.count } }),
        ("name link tag", calls, { for i in 0..<calls { sink &+= try codec.linkTag(fileID: directoryID, directoryID: directoryID, backingName: encoded[i & 63]).count } }),
        ("base64url encode", calls, { for i in 0..<calls { sink &+= Base64URL.encode(raw[i & 63]).utf8.count } }),
        ("base64url decode", calls, { for i in 0..<calls { sink &+= Base64URL.decode(rawEncoded[i & 63])?.count ?? 0 } }),
        ("kms wrap", calls / 10, { for _ in 0..<(calls / 10) { sink &+= try kms.wrap(dek, with: master, context: context).count } }),
        ("kms unwrap", calls / 10, { for _ in 0..<(calls / 10) { sink &+= try kms.unwrap(edek, with: master, context: context).count } }),
    ]
    let cases = allCases.filter { o.only.isEmpty || $0.0.contains(o.only) }
    var results = [[Double]](repeating: [], count: cases.count)
    for _ in 0..<o.rounds {
        for (i, c) in cases.enumerated() {
            let t0 = cpuNow()
            try c.2()
            results[i].append((cpuNow() - t0) * 1e6 / Double(c.1))
        }
    }
    print("case                 median µs   min µs   (CPU time per call, \(o.rounds) rounds)")
    for (i, c) in cases.enumerated() {
        print(c.0.padding(toLength: 20, withPad: " ", startingAt: 0), fmt(median(results[i])).padding(toLength: 11, withPad: " ", startingAt: 0), fmt(results[i].min()!))
    }
    if sink == 42 { print("") }
}

/// Removes the bench's keystore directory (a few key files and the lock).
func FileManager_remove(_ path: String) throws {
    if let dir = opendir(path) {
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            if name != "." && name != ".." { unlink(path + "/" + name) }
        }
        closedir(dir)
    }
    rmdir(path)
}

let options = BenchOptions.parse(tool: "name-codec", calls: 100_000, directory: "/tmp")
do { try run(options) } catch { print("name-codec: \(error)"); exit(1) }
