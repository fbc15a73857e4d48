import Foundation
import Glibc
import CMKCrypto
import CMKSystem

/// An invariant a fuzz target checks did not hold: a parser accepted bytes it should refuse,
/// returned wrong data, or lost a value on a round trip. Crashes and hangs need no error: the
/// fuzzer (or the test process) sees them directly.
public struct FuzzViolation: Error, CustomStringConvertible {
    public let target: String
    public let message: String

    public init(_ target: String, _ message: String) {
        self.target = target
        self.message = message
    }

    public var description: String { "\(target): \(message)" }
}

/// One fuzz target: a name (the directory under `fuzz/corpus/`) and the function that runs one
/// input through a parser and checks its invariants.
public struct FuzzTarget: Sendable {
    public let name: String
    public let run: @Sendable ([UInt8]) throws(FuzzViolation) -> Void
    /// Real inputs made by the code that writes this format, for the seed corpus.
    public let seeds: @Sendable () -> [(name: String, bytes: [UInt8])]
}

/// Every fuzz target, in the order docs/fuzzing.md lists them.
public enum FuzzTargets {
    public static let all: [FuzzTarget] = [
        FuzzTarget(name: "header", run: fuzzFileHeader, seeds: headerSeeds),
        FuzzTarget(name: "block", run: fuzzBlock, seeds: blockSeeds),
        FuzzTarget(name: "names", run: fuzzNames, seeds: nameSeeds),
        FuzzTarget(name: "metadata-db", run: fuzzMetadataDatabase, seeds: metadataDatabaseSeeds),
        FuzzTarget(name: "metadata-rows", run: fuzzMetadataRows, seeds: metadataRowSeeds),
        FuzzTarget(name: "audit-record", run: fuzzAuditRecord, seeds: auditRecordSeeds),
        FuzzTarget(name: "audit-segment", run: fuzzAuditSegment, seeds: auditSegmentSeeds),
        FuzzTarget(name: "control", run: fuzzControl, seeds: controlSeeds),
        FuzzTarget(name: "kms-server", run: fuzzKMSServer, seeds: kmsServerSeeds),
        FuzzTarget(name: "kms-client", run: fuzzKMSClient, seeds: kmsClientSeeds),
    ]

    /// The target called `name`, or nil.
    public static func named(_ name: String) -> FuzzTarget? { all.first { $0.name == name } }
}

// MARK: helpers shared by the targets

/// A per-process scratch directory, on tmpfs when there is one (targets write files every run),
/// removed at exit.
let scratchDirectory: String = {
    let base = (try? Descriptor.cwd.access("/dev/shm", mode: W_OK)) != nil ? "/dev/shm" : NSTemporaryDirectory()
    let path = "\(base)/cmkfs-fuzz.\(getpid())"
    try? Descriptor.cwd.mkdir(path, mode: 0o700)
    atexit { removeTree(scratchDirectory) }
    return path
}()

/// `rm -rf path` (only ever our own scratch directory).
func removeTree(_ path: String) {
    try? FileManager.default.removeItem(atPath: path)
}

/// Writes `bytes` to `path`, replacing it.
func writeFile(_ path: String, _ bytes: [UInt8]) {
    do {
        let file = try FileDescriptor.open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode: 0o600)
        try file.descriptor.writeAll(bytes)
    } catch {
        fatalError("fuzz harness: cannot write \(path): \(error)")
    }
}

func readFile(_ path: String) -> [UInt8] {
    guard let data = FileManager.default.contents(atPath: path) else { fatalError("fuzz harness: cannot read \(path)") }
    return [UInt8](data)
}

/// A fixed key for the formats a harness seals or MACs itself (seeds are made with it too).
func fixedKey(_ byte: UInt8) -> SecretBytes {
    let bytes = [UInt8](repeating: byte, count: 32)
    return bytes.withUnsafeBytes { SecretBytes(copying: $0) }
}

/// Consumes a fuzz input as structured values; past the end every read yields zeros, so any
/// input decodes to something.
struct ByteReader {
    let bytes: [UInt8]
    var at = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    var atEnd: Bool { at >= bytes.count }

    mutating func u8() -> UInt8 {
        guard at < bytes.count else { return 0 }
        defer { at += 1 }
        return bytes[at]
    }

    mutating func u64() -> UInt64 {
        var v: UInt64 = 0
        for _ in 0..<8 { v = v << 8 | UInt64(u8()) }
        return v
    }

    /// Up to `count` bytes (fewer at the end).
    mutating func take(_ count: Int) -> [UInt8] {
        let end = min(bytes.count, at + count)
        defer { at = max(at, end) }
        return at < end ? Array(bytes[at..<end]) : []
    }

    /// A u8 length, then that many bytes.
    mutating func shortBytes() -> [UInt8] { take(Int(u8())) }

    var rest: [UInt8] { at < bytes.count ? Array(bytes[at...]) : [] }
}

/// Splits `bytes` at `separator` (at most `limit` parts; the last keeps any further separators).
func split(_ bytes: [UInt8], at separator: UInt8, limit: Int) -> [[UInt8]] {
    var parts: [[UInt8]] = []
    var current: [UInt8] = []
    for b in bytes {
        if b == separator && parts.count < limit - 1 {
            parts.append(current)
            current = []
        } else {
            current.append(b)
        }
    }
    parts.append(current)
    return parts
}
