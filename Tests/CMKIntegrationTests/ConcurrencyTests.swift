import Foundation
import XCTest

/// Several processes writing one file at once.
class ConcurrencyTests: IntegrationTestCase {
    /// A writer: pwrites `length` bytes of `data` (from its start) at `offset` of `path`, in
    /// chunks of `chunk` bytes, `rounds` times over, in a shuffled order each round.
    static let writer = """
    import os, random, sys
    path, data_path, offset, chunk, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    data = open(data_path, 'rb').read()
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o644)
    starts = list(range(0, len(data), chunk))
    for r in range(rounds):
        random.shuffle(starts)
        for s in starts:
            piece = data[s:s + chunk]
            assert os.pwrite(fd, piece, offset + s) == len(piece)
    os.close(fd)
    """

    /// Starts the four writers in the background and waits for all; fails if any failed.
    func runWriters(_ commands: [String], file: StaticString = #filePath, line: UInt = #line) {
        let writerPath = plain + "/writer.py"
        _ = FileManager.default.createFile(atPath: writerPath, contents: Data(Self.writer.utf8))
        var script = "fail=0\n"
        for (i, command) in commands.enumerated() { script += "\(command) & p\(i)=$!\n" }
        for i in commands.indices { script += "wait $p\(i) || fail=1\n" }
        script += "exit $fail\n"
        sh(script, timeout: 180, file: file, line: line)
    }

    /// Four writers, disjoint ranges whose edges fall inside blocks (so neighbours share a
    /// block and each must read-modify-write it without losing the other's bytes).
    func testFourWritersOnDisjointRangesLoseNothing() throws {
        let part = 1_000_003
        var commands: [String] = []
        for i in 0..<4 {
            makeRandomFile("\(plain)/part\(i)", size: part)
            commands.append("\(Shell.python) \(plain)/writer.py \(mnt)/shared \(plain)/part\(i) \(i * part) \(i % 2 == 0 ? 10_000 : 65_536 + 123) 2")
        }
        sh("cat \(plain)/part0 \(plain)/part1 \(plain)/part2 \(plain)/part3 > \(plain)/expected")
        runWriters(commands)
        XCTAssertEqual(sh("stat -c %s \(mnt)/shared"), "\(4 * part)\n")
        XCTAssertEqual(sha256(mnt + "/shared"), sha256(plain + "/expected"))
        try fx.remount()
        XCTAssertEqual(sha256(mnt + "/shared"), sha256(plain + "/expected"), "after a remount")
    }

    /// Four writers over overlapping ranges, block-aligned chunks: every 4 KiB block of the
    /// result is exactly the data one of the writers covering it wrote there, never a mix or
    /// garbage, and the size is the furthest end.
    func testFourWritersOnOverlappingRangesNeverTearBlocks() throws {
        let quarter = 256 * 1024, span = 512 * 1024
        var commands: [String] = []
        for i in 0..<4 {
            makeRandomFile("\(plain)/w\(i)", size: span)
            commands.append("\(Shell.python) \(plain)/writer.py \(mnt)/shared \(plain)/w\(i) \(i * quarter) \(4096 * (i + 1)) 3")
        }
        runWriters(commands)
        let size = 3 * quarter + span
        XCTAssertEqual(sh("stat -c %s \(mnt)/shared"), "\(size)\n")
        sh("cp \(mnt)/shared \(plain)/result")
        let result = try Data(contentsOf: URL(fileURLWithPath: plain + "/result"))
        let writers = try (0..<4).map { try Data(contentsOf: URL(fileURLWithPath: "\(plain)/w\($0)")) }
        XCTAssertEqual(result.count, size)
        var winners = [Int](repeating: 0, count: 4)
        var bad: [Int] = []
        for blockStart in stride(from: 0, to: size, by: 4096) {
            let block = result[blockStart..<(blockStart + 4096)]
            let match = (0..<4).first { i in
                let start = i * quarter
                guard blockStart >= start, blockStart + 4096 <= start + span else { return false }
                return writers[i][(blockStart - start)..<(blockStart - start + 4096)].elementsEqual(block)
            }
            if let match { winners[match] += 1 } else { bad.append(blockStart / 4096) }
        }
        XCTAssertEqual(bad, [], "blocks that match no writer covering them")
        print("[cmkfs-it] overlapping writers: blocks won per writer \(winners)")
        try fx.remount()
        XCTAssertEqual(sha256(mnt + "/shared"), sha256(plain + "/result"), "after a remount")
    }

    /// Four shells appending lines with `>>` (a new O_APPEND open per line): no line lost,
    /// duplicated or torn.
    func testFourAppendersLoseNoLine() throws {
        let lines = 1000
        var script = "fail=0\n"
        for i in 0..<4 {
            // Lines of varying length so appends keep crossing block boundaries.
            script += """
            ( j=1; while [ $j -le \(lines) ]; do
                printf 'writer-\(i) line-%05d %s\\n' $j "$(printf '%0*d' $(( (j * 37 + \(i) * 11) % 300 )) 0)" >> \(mnt)/log || exit 1
                j=$((j + 1)); done ) & p\(i)=$!

            """
        }
        for i in 0..<4 { script += "wait $p\(i) || fail=1\n" }
        script += "exit $fail\n"
        sh(script, timeout: 240)
        sh("cp \(mnt)/log \(plain)/log")
        let text = try String(contentsOfFile: plain + "/log", encoding: .utf8)
        var expected: [String] = []
        for i in 0..<4 {
            for j in 1...lines {
                expected.append(String(format: "writer-%d line-%05d ", i, j) + String(repeating: "0", count: max(1, (j * 37 + i * 11) % 300)))
            }
        }
        let got = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        XCTAssertEqual(got.last, "", "the file ends with a newline")
        XCTAssertEqual(got.dropLast().sorted(), expected.sorted(), "every line exactly once, intact")
        XCTAssertEqual(text.utf8.count, expected.reduce(0) { $0 + $1.utf8.count + 1 })
        // Each writer's own lines stay in its order.
        for i in 0..<4 {
            let mine = got.filter { $0.hasPrefix("writer-\(i) ") }
            XCTAssertEqual(mine, expected.filter { $0.hasPrefix("writer-\(i) ") }, "writer \(i)'s lines in order")
        }
        XCTAssertEqual(sh("stat -c %s \(mnt)/log"), "\(text.utf8.count)\n")
    }
}
