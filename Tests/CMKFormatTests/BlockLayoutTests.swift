import XCTest
@testable import CMKFormat

final class BlockLayoutTests: XCTestCase {
    func testWorkedSizes4096() {
        let l = BlockLayout()
        XCTAssertEqual(l.blockSize, 4096)
        XCTAssertEqual(BlockLayout.defaultBlockSize, 4096)
        XCTAssertEqual(BlockLayout.overhead, 28)
        XCTAssertEqual(l.diskBlockSize, 4124)
        XCTAssertEqual(FileHeader.size, 24)
        XCTAssertEqual(l.backingSize(plaintextSize: 0), 24)
        XCTAssertEqual(l.backingSize(plaintextSize: 1), 53)
        XCTAssertEqual(l.backingSize(plaintextSize: 4095), 24 + 4095 + 28)
        XCTAssertEqual(l.backingSize(plaintextSize: 4096), 4148)
        XCTAssertEqual(l.backingSize(plaintextSize: 4097), 4177)
        XCTAssertEqual(l.backingSize(plaintextSize: 8192), 24 + 2 * 4124)
        XCTAssertEqual(l.backingSize(plaintextSize: 1 << 30), 24 + (1 << 18) * 4124)
        XCTAssertEqual(l.diskOffset(ofBlock: 0), 24)
        XCTAssertEqual(l.diskOffset(ofBlock: 1), 4148)
        XCTAssertEqual(l.diskOffset(ofBlock: 10), 24 + 41240)
    }

    func testWorkedSizes512() {
        let l = BlockLayout(blockSize: 512)
        XCTAssertEqual(l.diskBlockSize, 540)
        XCTAssertEqual(l.backingSize(plaintextSize: 0), 24)
        XCTAssertEqual(l.backingSize(plaintextSize: 1), 53)
        XCTAssertEqual(l.backingSize(plaintextSize: 512), 564)
        XCTAssertEqual(l.backingSize(plaintextSize: 513), 593)
        XCTAssertEqual(l.backingSize(plaintextSize: 1024), 24 + 1080)
        XCTAssertEqual(l.plaintextSize(backingSize: 564), 512)
        XCTAssertEqual(l.plaintextSize(backingSize: 593), 513)
        XCTAssertNil(l.plaintextSize(backingSize: 565))
        XCTAssertNil(l.plaintextSize(backingSize: 592))
        XCTAssertEqual(l.diskOffset(ofBlock: 3), 24 + 3 * 540)
    }

    func testPlaintextLengthOfBlock() {
        let l = BlockLayout()
        XCTAssertEqual(l.plaintextLength(ofBlock: 0, plaintextSize: 0), 0)
        XCTAssertEqual(l.plaintextLength(ofBlock: 0, plaintextSize: 1), 1)
        XCTAssertEqual(l.plaintextLength(ofBlock: 0, plaintextSize: 4096), 4096)
        XCTAssertEqual(l.plaintextLength(ofBlock: 1, plaintextSize: 4096), 0)
        XCTAssertEqual(l.plaintextLength(ofBlock: 0, plaintextSize: 10_000), 4096)
        XCTAssertEqual(l.plaintextLength(ofBlock: 2, plaintextSize: 10_000), 10_000 - 8192)
        XCTAssertEqual(l.plaintextLength(ofBlock: 3, plaintextSize: 10_000), 0)
        XCTAssertEqual(l.plaintextLength(ofBlock: 99, plaintextSize: 10_000), 0)
    }

    private func checkInverse(_ l: BlockLayout, _ size: Int, file: StaticString = #filePath, line: UInt = #line) {
        let backing = l.backingSize(plaintextSize: size)
        XCTAssertEqual(l.plaintextSize(backingSize: backing), size, "size \(size)", file: file, line: line)
        XCTAssertEqual(l.displaySize(backingSize: backing), size, "size \(size)", file: file, line: line)
        // Backing size is the sum of the header and every block's on-disk length.
        let blocks = (size + l.blockSize - 1) / l.blockSize
        if blocks <= 4 {
            let sum = FileHeader.size + (0..<blocks).reduce(0) {
                $0 + l.plaintextLength(ofBlock: $1, plaintextSize: size) + BlockLayout.overhead
            }
            XCTAssertEqual(backing, sum, "size \(size)", file: file, line: line)
        }
    }

    func testPlaintextSizeInvertsBackingSize() {
        var rng = SplitMix64(seed: 0xB10C)
        for l in [BlockLayout(), BlockLayout(blockSize: 512), BlockLayout(blockSize: 1 << 16)] {
            let bs = l.blockSize
            for size in 0...(3 * bs + 7) { checkInverse(l, size) }
            for k in [10, 100, 1000, 1 << 20] {
                for delta in -2...2 { checkInverse(l, k * bs + delta) }
            }
            for _ in 0..<2000 { checkInverse(l, rng.int(0...(1 << 40))) }
            // Strictly increasing, so the inverse is unique.
            var last = -1
            for size in 0...(2 * bs + 3) {
                let b = l.backingSize(plaintextSize: size)
                XCTAssertGreaterThan(b, last)
                last = b
            }
        }
    }

    func testImpossibleBackingSizes() {
        for l in [BlockLayout(), BlockLayout(blockSize: 512)] {
            // No header, or a torn header.
            for backing in [0, 1, 12, FileHeader.size - 1] {
                XCTAssertNil(l.plaintextSize(backingSize: backing), "backing \(backing)")
                XCTAssertEqual(l.displaySize(backingSize: backing), 0, "backing \(backing)")
            }
            // A last block of 1…28 bytes cannot hold nonce, tag and a byte: 25…52 after the
            // header, and the same after any number of full blocks.
            for full in [0, 1, 2, 7, 1000] {
                let base = FileHeader.size + full * l.diskBlockSize
                for rest in 1...BlockLayout.overhead {
                    XCTAssertNil(l.plaintextSize(backingSize: base + rest), "\(full) blocks + \(rest)")
                    // Applications see the readable prefix and one byte more, so that reading
                    // to the end reaches the torn block (EIO) instead of stopping short.
                    XCTAssertEqual(l.displaySize(backingSize: base + rest), full * l.blockSize + 1, "\(full) blocks + \(rest)")
                }
                XCTAssertEqual(l.plaintextSize(backingSize: base), full * l.blockSize)
                XCTAssertEqual(l.plaintextSize(backingSize: base + BlockLayout.overhead + 1), full * l.blockSize + 1)
            }
        }
        let l = BlockLayout()
        for backing in 25...52 { XCTAssertNil(l.plaintextSize(backingSize: backing), "backing \(backing)") }
        XCTAssertEqual(l.plaintextSize(backingSize: 24), 0)
        XCTAssertEqual(l.plaintextSize(backingSize: 53), 1)
        XCTAssertNil(l.plaintextSize(backingSize: 23))
        XCTAssertEqual(l.displaySize(backingSize: 4148 + 10), 4097)
        XCTAssertEqual(l.displaySize(backingSize: 4148 + 30), 4098)
    }

    func testEquatable() {
        XCTAssertEqual(BlockLayout(), BlockLayout(blockSize: 4096))
        XCTAssertNotEqual(BlockLayout(), BlockLayout(blockSize: 512))
    }
}
