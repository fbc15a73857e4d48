import Glibc
import XCTest
import CMKCrypto
@testable import CMKFormat

final class ContentFileTests: XCTestCase {
    var dir: TempDir!

    override func setUpWithError() throws {
        try super.setUpWithError()
        dir = try TempDir()
    }

    override func tearDown() {
        dir = nil
        super.tearDown()
    }

    /// Full content, backing size and derived plaintext size all agree with the model.
    private func check(_ h: Harness, _ step: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let content = try h.readAll()
        XCTAssertEqual(h.size, h.model.count, step, file: file, line: line)
        XCTAssertTrue(sameBytes(content, h.model), "content differs from the model after \(step)", file: file, line: line)
        let backing = h.backingSize
        XCTAssertEqual(backing, h.layout.backingSize(plaintextSize: h.size), "backing size after \(step)", file: file, line: line)
        XCTAssertEqual(h.layout.plaintextSize(backingSize: backing), h.size, "derived size after \(step)", file: file, line: line)
    }

    func testHeaderIsWrittenAndReadBack() throws {
        let h = try Harness(path: dir.file("a"), layout: BlockLayout())
        XCTAssertEqual(h.backingSize, FileHeader.size)
        XCTAssertEqual(h.raw(at: 0, count: 24), FileHeader.encode(h.file.fileID))
        XCTAssertEqual(try ContentFile.readFileID(fd: h.fd), h.file.fileID)
        try h.write(Array("hello".utf8), at: 0)
        XCTAssertEqual(try ContentFile.readFileID(fd: h.fd), h.file.fileID)
        XCTAssertEqual(try h.readAll(), Array("hello".utf8))
    }

    /// A new file's first write reserves no space (no fallocate per created file), yet a write
    /// cut short (here by the file-size limit, as ENOSPC would) leaves no torn block: the file
    /// is cut back to its header and reads as empty, and a later write succeeds. Before, the
    /// reservation went through (fallocate with KEEP_SIZE ignores RLIMIT_FSIZE) and the short
    /// write left part of a block behind.
    func testFirstWriteCutShortLeavesTheFileAsItWas() throws {
        let h = try Harness(path: dir.file("cut"), layout: BlockLayout(blockSize: 4096))
        let old = signal(SIGXFSZ, SIG_IGN)
        var saved = rlimit()
        getrlimit(Int32(RLIMIT_FSIZE.rawValue), &saved)
        var limit = saved
        limit.rlim_cur = 6000
        XCTAssertEqual(setrlimit(Int32(RLIMIT_FSIZE.rawValue), &limit), 0)
        let failure: Error? = {
            defer {
                setrlimit(Int32(RLIMIT_FSIZE.rawValue), &saved)
                signal(SIGXFSZ, old)
            }
            do { try h.write([UInt8](repeating: 7, count: 3 * 4096), at: 0); return nil } catch { return error }
        }()
        XCTAssertNotNil(failure, "the write should have crossed the file-size limit")
        XCTAssertEqual(h.backingSize, FileHeader.size, "a failed first write is cut back to the header")
        XCTAssertEqual(h.size, 0)
        XCTAssertEqual(try h.readAll(), [])
        try h.write(Array("after".utf8), at: 0)
        try check(h, "a write after the failed one")
    }

    func testReadFileIDRejectsBadHeaders() throws {
        let h = try Harness(path: dir.file("a"), layout: BlockLayout())
        h.rawWrite(Array("XMKF".utf8), at: 0)
        guard case .corruptHeader? = expectContentError({ try ContentFile.readFileID(fd: h.fd) }) else {
            return XCTFail("bad magic must be a corrupt header")
        }
        _ = ftruncate(h.fd, 10)
        guard case .corruptHeader? = expectContentError({ try ContentFile.readFileID(fd: h.fd) }) else {
            return XCTFail("a short header must be a corrupt header")
        }
        _ = ftruncate(h.fd, 0)
        guard case .corruptHeader? = expectContentError({ try ContentFile.readFileID(fd: h.fd) }) else {
            return XCTFail("an empty file must be a corrupt header")
        }
    }

    func testEmptyFileReadsNothing() throws {
        let h = try Harness(path: dir.file("a"), layout: BlockLayout())
        XCTAssertEqual(try h.read(at: 0, count: 100), [])
        XCTAssertEqual(try h.read(at: 5000, count: 100), [])
        try h.write([], at: 100)
        XCTAssertEqual(h.size, 0, "an empty write changes nothing")
        try check(h, "empty write")
    }

    func testWorkedScenarios() throws {
        for bs in [4096, 512] {
            let h = try Harness(path: dir.file("s\(bs)"), layout: BlockLayout(blockSize: bs))
            var rng = SplitMix64(seed: UInt64(bs))
            try h.write(rng.bytes(2 * bs + 100), at: 0); try check(h, "write 2 blocks + 100")
            try h.write(rng.bytes(10), at: bs - 5); try check(h, "write across block boundary")
            try h.write(rng.bytes(3), at: 2 * bs + 99); try check(h, "append across the end of a partial block")
            try h.truncate(to: bs + 1); try check(h, "shrink to one block + 1")
            try h.truncate(to: bs); try check(h, "shrink to a block boundary")
            try h.truncate(to: bs - 1); try check(h, "shrink into block 0")
            try h.truncate(to: 0); try check(h, "shrink to 0")
            try h.truncate(to: 3 * bs + 5); try check(h, "grow from 0 (hole)")
            try h.write(rng.bytes(10), at: 1); try check(h, "write into a hole")
            try h.truncate(to: 100); try check(h, "shrink from a hole into data")
            try h.truncate(to: 2 * bs - 3); try check(h, "grow from an unaligned size")
            try h.write(rng.bytes(7), at: 5 * bs + 3); try check(h, "write past EOF leaving a gap")
            try h.write(rng.bytes(bs), at: 3 * bs); try check(h, "overwrite a hole block fully")
            try h.write(rng.bytes(6 * bs + 17), at: 11); try check(h, "large write larger than the scratch buffer")
            try h.truncate(to: 4 * bs); try check(h, "shrink to a block boundary after a large write")
            try h.truncate(to: 4 * bs + 1); try check(h, "grow by one byte from a boundary")
            try h.write(rng.bytes(1), at: 4 * bs); try check(h, "overwrite the last single byte")
            try h.truncate(to: 4 * bs + 1); try check(h, "truncate to the same size")
            try h.reopen()
            XCTAssertEqual(try ContentFile.readFileID(fd: h.fd), h.file.fileID)
            try check(h, "reopen")
        }
    }

    func testShrinkAfterWritingMoreThan4KiB() throws {
        for bs in [4096, 512] {
            let h = try Harness(path: dir.file("t\(bs)"), layout: BlockLayout(blockSize: bs))
            var rng = SplitMix64(seed: 99)
            try h.write(rng.bytes(10_000), at: 0)
            for newSize in [9_999, 8_193, 8_192, 5_000, 4_097, 4_096, 4_095, 513, 512, 511, 1, 0] {
                try h.truncate(to: newSize)
                try check(h, "shrink to \(newSize) (bs \(bs))")
            }
            try h.write(rng.bytes(5_000), at: 0)
            try h.truncate(to: 4_000)
            try check(h, "shrink 5000 → 4000 (bs \(bs))")
        }
    }

    /// The randomized property test: writes, reads and truncates against the in-memory model.
    private func runRandomized(layout: BlockLayout, seed: UInt64, operations: Int, maxBlocks: Int) throws {
        let h = try Harness(path: dir.file("r\(layout.blockSize)"), layout: layout)
        var rng = SplitMix64(seed: seed)
        let bs = layout.blockSize, maxSize = maxBlocks * bs
        var counts = [String: Int]()
        for step in 0..<operations {
            let roll = rng.int(0...99)
            let label: String
            if roll < 42 {
                var offset: Int
                switch rng.int(0...9) {
                case 0...2: offset = rng.int(0...(maxBlocks - 1)) * bs                       // aligned
                case 3...5: offset = max(0, h.size + rng.int(-bs...bs))                       // near EOF
                case 6: offset = h.size + rng.int(bs...(3 * bs))                              // past EOF: gap
                default: offset = rng.int(0...min(h.size + 2 * bs, maxSize - 1))             // anywhere
                }
                offset = min(offset, maxSize - 1)
                var length: Int
                switch rng.int(0...9) {
                case 0...3: length = rng.int(1...64)
                case 4...6: length = rng.int(1...bs)
                case 7: length = bs * rng.int(1...3)
                default: length = rng.int(bs...(5 * bs))
                }
                length = min(length, maxSize - offset)
                label = "write \(length) at \(offset) (size \(h.size))"
                counts[offset > h.size ? "write-gap" : offset + length > h.size ? "write-extend" : "write-inside", default: 0] += 1
                try h.write(rng.bytes(length), at: offset)
            } else if roll < 62 {
                let newSize: Int
                switch rng.int(0...9) {
                case 0: newSize = 0
                case 1...2: newSize = rng.int(0...maxBlocks) * bs                             // block boundary
                case 3...4: newSize = max(0, min(maxSize, h.size + rng.int(-40...40)))       // small change
                case 5: newSize = h.size / 2
                default: newSize = rng.int(0...maxSize)
                }
                label = "truncate \(h.size) → \(newSize)"
                if newSize < h.size {
                    counts["shrink", default: 0] += 1
                    if h.size >= 4096 { counts["shrink-from-4k", default: 0] += 1 }
                    if newSize % bs == 0 { counts["shrink-to-boundary", default: 0] += 1 }
                    if newSize == 0 { counts["shrink-to-0", default: 0] += 1 }
                } else if newSize > h.size {
                    counts["grow", default: 0] += 1
                    if h.size % bs != 0 { counts["grow-unaligned", default: 0] += 1 }
                }
                try h.truncate(to: newSize)
            } else {
                // Random reads, checked against the model slice; then the full check below.
                for _ in 0..<3 {
                    let offset = rng.int(0...(h.size + bs))
                    let count = rng.int(0...(3 * bs))
                    let got = try h.read(at: offset, count: count)
                    let expected = offset >= h.size ? [] : Array(h.model[offset..<min(h.size, offset + count)])
                    XCTAssertTrue(sameBytes(got, expected), "step \(step): read \(count) at \(offset) of \(h.size)")
                }
                label = "reads"
                counts["read", default: 0] += 1
            }
            if step % 500 == 499 { try h.reopen() }
            try check(h, "step \(step): \(label)")
            if testRun?.failureCount ?? 0 > 0 { return XCTFail("stopping at the first failing step (seed \(seed))") }
        }
        // Each kind of operation actually happened a fair number of times.
        for kind in ["write-gap", "write-extend", "write-inside", "shrink", "shrink-from-4k", "shrink-to-boundary",
                     "shrink-to-0", "grow", "grow-unaligned", "read"] {
            XCTAssertGreaterThan(counts[kind, default: 0], 20, "too few \(kind) operations: \(counts)")
        }
    }

    func testRandomizedAgainstModel4096() throws {
        try runRandomized(layout: BlockLayout(), seed: 0x5EED_4096, operations: 3000, maxBlocks: 20)
    }

    func testRandomizedAgainstModel512() throws {
        try runRandomized(layout: BlockLayout(blockSize: 512), seed: 0x5EED_0512, operations: 3000, maxBlocks: 40)
    }

    func testSparseGrowTo1GiB() throws {
        let h = try Harness(path: dir.file("sparse"), layout: BlockLayout())
        let head = Array("the head of a very sparse file".utf8)
        try h.write(head, at: 0)
        let gib = 1 << 30
        h.tracksModel = false
        try h.truncate(to: gib)
        XCTAssertEqual(h.backingSize, h.layout.backingSize(plaintextSize: gib))
        XCTAssertGreaterThan(h.backingSize, gib)
        let allocated = Int(h.fileStat().st_blocks) * 512
        XCTAssertLessThan(allocated, 1 << 20, "growing must leave a hole, not write 1 GiB")

        XCTAssertEqual(try h.read(at: 0, count: head.count), head)
        XCTAssertEqual(try h.read(at: head.count, count: 4096 - head.count), [UInt8](repeating: 0, count: 4096 - head.count))
        let zeros = [UInt8](repeating: 0, count: 1 << 20)
        XCTAssertTrue(sameBytes(try h.read(at: 512 << 20, count: 1 << 20), zeros))
        XCTAssertTrue(sameBytes(try h.read(at: (512 << 20) + 77, count: 1 << 20), zeros), "unaligned read in the hole")
        XCTAssertEqual(try h.read(at: gib - 10, count: 100), [UInt8](repeating: 0, count: 10), "read across EOF")
        XCTAssertEqual(try h.read(at: gib, count: 100), [])

        // A write in the middle of the hole: only its block gets data.
        let mid = 700_000_123
        try h.write(Array("island".utf8), at: mid)
        XCTAssertEqual(h.size, gib)
        XCTAssertEqual(try h.read(at: mid - 3, count: 12), [0, 0, 0] + Array("island".utf8) + [0, 0, 0])
        XCTAssertTrue(sameBytes(try h.read(at: mid + 6, count: 8192), [UInt8](repeating: 0, count: 8192)))
        XCTAssertLessThan(Int(h.fileStat().st_blocks) * 512, 1 << 20)
        XCTAssertEqual(h.backingSize, h.layout.backingSize(plaintextSize: gib))

        // Shrink back: the head survives and the size matches.
        try h.truncate(to: 100)
        XCTAssertEqual(h.backingSize, h.layout.backingSize(plaintextSize: 100))
        XCTAssertEqual(try h.read(at: 0, count: 100), head + [UInt8](repeating: 0, count: 100 - head.count))
    }

    func testWritePastEOFLeavesHoleBlocksOnDisk() throws {
        let h = try Harness(path: dir.file("gap"), layout: BlockLayout(blockSize: 512))
        try h.write([1, 2, 3], at: 0)
        try h.write([9], at: 5 * 512 + 10)
        try check(h, "gap write")
        // Blocks 1…4 were never written: all zero bytes on disk, and they read as zeros.
        for index in 1...4 {
            XCTAssertEqual(h.rawDiskBlock(index), [UInt8](repeating: 0, count: 540), "block \(index) is a hole")
            XCTAssertEqual(try h.readBlock(index), [UInt8](repeating: 0, count: 512))
        }
        // Block 0 was re-sealed to full length and is not plaintext on disk.
        let block0 = h.rawDiskBlock(0)
        XCTAssertEqual(block0.count, 540)
        XCTAssertNotEqual(Array(block0[0..<12]), [UInt8](repeating: 0, count: 12))
        XCTAssertNotEqual(Array(block0[12..<15]), [1, 2, 3])
    }

    func testRewritingUsesFreshNonces() throws {
        let h = try Harness(path: dir.file("n"), layout: BlockLayout(blockSize: 512))
        let data = [UInt8](repeating: 0x77, count: 512)
        var nonces = Set<[UInt8]>()
        for _ in 0..<50 {
            try h.write(data, at: 0)
            let disk = h.rawDiskBlock(0)
            XCTAssertTrue(nonces.insert(Array(disk[0..<12])).inserted, "nonce reused on rewrite")
            XCTAssertFalse(disk[12..<524].allSatisfy { $0 == 0x77 }, "plaintext on disk")
        }
        try check(h, "rewrites")
    }
}
