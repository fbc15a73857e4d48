import Foundation
import XCTest
import CMKFuzzTargets

/// Runs every fuzz target over its corpus in fuzz/corpus/ (seeds and what libFuzzer found)
/// and over deterministic mutations of it, so `swift test` catches a regression in any parser
/// of untrusted bytes without libFuzzer (docs/fuzzing.md).
final class FuzzCorpusTests: XCTestCase {
    static let repoRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// Mutations per target: enough to shake out shallow bugs, few enough to keep all targets
    /// under a few seconds together.
    static let mutationsPerTarget = 1500

    /// The corpus files of `target`, by file name.
    static func corpus(_ target: String) -> [(String, [UInt8])] {
        let dir = repoRoot.appendingPathComponent("fuzz/corpus/\(target)")
        let names = (try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? []
        return names.sorted().compactMap { name in
            guard let data = FileManager.default.contents(atPath: dir.appendingPathComponent(name).path) else { return nil }
            return (name, [UInt8](data))
        }
    }

    func run(_ name: String, mutations: Int = mutationsPerTarget) throws {
        let target = try XCTUnwrap(FuzzTargets.named(name))
        let inputs = Self.corpus(name)
        XCTAssertFalse(inputs.isEmpty, "fuzz/corpus/\(name)/ is empty: run CMKFS_WRITE_CORPUS=1 swift test --filter CMKFuzzTests")
        for (file, bytes) in inputs {
            do { try target.run(bytes) } catch { XCTFail("fuzz/corpus/\(name)/\(file): \(error)") }
        }
        var rng = SplitMix64(seed: name.utf8.reduce(0xC0FFEE as UInt64) { $0 &* 31 &+ UInt64($1) })
        for i in 0..<mutations {
            let input = Mutator.mutate(inputs.map(\.1), using: &rng)
            do { try target.run(input) } catch {
                XCTFail("\(name) mutation \(i) (\(input.count) bytes, base64 \(Data(input).base64EncodedString())): \(error)")
                return
            }
        }
    }

    func testHeader() throws { try run("header") }
    func testBlock() throws { try run("block") }
    func testNames() throws { try run("names") }
    func testMetadataDatabase() throws { try run("metadata-db", mutations: 300) }
    func testMetadataRows() throws { try run("metadata-rows", mutations: 600) }
    func testAuditRecord() throws { try run("audit-record") }
    func testAuditSegment() throws { try run("audit-segment") }
    func testControl() throws { try run("control") }
    func testKMSServer() throws { try run("kms-server", mutations: 800) }
    func testKMSClient() throws { try run("kms-client", mutations: 800) }

    /// Regenerates the seeds from the code that writes each format (not a test: run by hand
    /// after a format change, with CMKFS_WRITE_CORPUS=1 for every target or a comma-separated
    /// list of targets; the seeds are committed).
    func testWriteSeeds() throws {
        guard let which = ProcessInfo.processInfo.environment["CMKFS_WRITE_CORPUS"] else { return }
        let names = Set(which.split(separator: ",").map(String.init))
        for target in FuzzTargets.all where which == "1" || names.contains(target.name) {
            let dir = Self.repoRoot.appendingPathComponent("fuzz/corpus/\(target.name)")
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            for seed in target.seeds() {
                try Data(seed.bytes).write(to: dir.appendingPathComponent("seed-\(seed.name)"))
            }
        }
    }
}

/// A small, seeded PRNG so every run of the test tries the same mutations.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E3779B97F4A7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58476D1CE4E5B9
        z = (z ^ (z >> 27)) &* 0x94D049BB133111EB
        return z ^ (z >> 31)
    }
}

/// libFuzzer's simplest moves: bit flips, byte sets, interesting values, truncation,
/// insertion, deletion and splices of two corpus inputs; one to four per input.
enum Mutator {
    static let interesting: [UInt8] = [0, 1, 0x7F, 0x80, 0xFF, 0x0A, 0x22, 0x5C, 0x1E, 0x30, 0x39]

    static func mutate(_ corpus: [[UInt8]], using rng: inout SplitMix64) -> [UInt8] {
        var bytes = corpus.isEmpty ? [] : corpus[Int.random(in: 0..<corpus.count, using: &rng)]
        for _ in 0..<Int.random(in: 1...4, using: &rng) {
            let at = bytes.isEmpty ? 0 : Int.random(in: 0..<bytes.count, using: &rng)
            switch Int.random(in: 0..<8, using: &rng) {
            case 0 where !bytes.isEmpty: bytes[at] ^= 1 << UInt8.random(in: 0..<8, using: &rng)
            case 1 where !bytes.isEmpty: bytes[at] = UInt8.random(in: 0...255, using: &rng)
            case 2 where !bytes.isEmpty: bytes[at] = interesting.randomElement(using: &rng)!
            case 3: bytes = Array(bytes.prefix(Int.random(in: 0...bytes.count, using: &rng)))
            case 4: bytes.insert(contentsOf: (0..<Int.random(in: 1...16, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }, at: at)
            case 5 where !bytes.isEmpty: bytes.removeSubrange(at..<min(bytes.count, at + Int.random(in: 1...16, using: &rng)))
            case 6 where !corpus.isEmpty:
                let other = corpus[Int.random(in: 0..<corpus.count, using: &rng)]
                let cut = Int.random(in: 0...other.count, using: &rng)
                bytes = Array(bytes.prefix(at)) + other[cut...]
            default:
                // Repeat a slice: grows inputs past length fields and limits.
                if !bytes.isEmpty { bytes.insert(contentsOf: bytes[at..<min(bytes.count, at + 64)], at: at) }
            }
        }
        return bytes
    }
}
