// edek-read: CPU per EDEK read from meta.db, the metadata half of a key-miss open
// (MetadataStore.fileKey, with and without the name binding read in the same statement).
// Not a test; run it outside `swift test`, on a release build:
//
//     swift build -c release --product edek-read
//     .build/release/edek-read [--calls N] [--rounds R] [--dir DIR]
//
// A fresh meta.db in DIR (default /tmp) with 5,000 files' key rows, each with a binding row,
// read in a scattered order. Prints the median and minimum µs per read by thread CPU time.
import Foundation
import Glibc
import BenchSupport
import CMKMetadata

func run(_ o: BenchOptions) throws {
    let dir = o.directory + "/edek-read-\(getpid())"
    mkdir(dir, 0o700)
    defer {
        for suffix in ["", "-wal", "-shm", "-journal", "-reserve"] { unlink(dir + "/meta.db" + suffix) }
        rmdir(dir)
    }
    let store = try MetadataStore.create(at: dir + "/meta.db")
    let files = 5000
    func fileID(_ n: Int) -> [UInt8] { (0..<16).map { UInt8(truncatingIfNeeded: (n &* 2654435761) >> ($0 % 4 * 8)) ^ UInt8($0) } }
    let tag = [UInt8](repeating: 7, count: 16)
    for n in 0..<files {
        try store.insertFileKey(fileID: fileID(n), FileKeyRecord(edek: [UInt8](repeating: UInt8(n & 0xFF), count: 60),
                                                                 keyId: "mk-0123456789abcdef", keyVersion: 1), linkTag: tag)
    }
    let ids = (0..<files).map { fileID(($0 &* 7919) % files) }
    var sink = 0
    let cases: [(String, () throws -> Void)] = [
        ("edek read", { for i in 0..<o.calls { sink &+= try store.fileKey(fileID: ids[i % files])?.edek.count ?? 0 } }),
        ("edek + binding read", { for i in 0..<o.calls { sink &+= try store.fileKey(fileID: ids[i % files], boundBy: tag)?.record.edek.count ?? 0 } }),
    ]
    var results = [[Double]](repeating: [], count: cases.count)
    for _ in 0..<o.rounds {
        for (i, c) in cases.enumerated() {
            let t0 = cpuNow()
            try c.1()
            results[i].append((cpuNow() - t0) * 1e6 / Double(o.calls))
        }
    }
    print("case                 median µs   min µs   (CPU time per call, \(o.rounds) rounds)")
    for (i, c) in cases.enumerated() {
        print(c.0.padding(toLength: 20, withPad: " ", startingAt: 0), fmt(median(results[i])).padding(toLength: 11, withPad: " ", startingAt: 0), fmt(results[i].min()!))
    }
    if sink == 42 { print("") }
}

let options = BenchOptions.parse(tool: "edek-read", calls: 100_000, directory: "/tmp", only: false)
do { try run(options) } catch { print("edek-read: \(error)"); exit(1) }
