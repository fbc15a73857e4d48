import Glibc
import XCTest
import CMKCrypto
@testable import CMKFormat

/// Tampering with the backing file: every change to a sealed block is detected, per block.
final class ContentCorruptionTests: XCTestCase {
    var dir: TempDir!
    let layouts = [BlockLayout(), BlockLayout(blockSize: 512)]

    override func setUpWithError() throws {
        try super.setUpWithError()
        dir = try TempDir()
    }

    override func tearDown() {
        dir = nil
        super.tearDown()
    }

    /// A file of three full blocks and a partial fourth, with distinct content.
    private func fixture(_ layout: BlockLayout, name: String = "f", key: SecretBytes? = nil,
                         fileID: FileID? = nil, seed: UInt64 = 1) throws -> Harness {
        let h = try Harness(path: dir.file("\(name)-\(layout.blockSize)"), layout: layout, key: key, fileID: fileID)
        var rng = SplitMix64(seed: seed)
        try h.write(rng.bytes(3 * layout.blockSize + 100), at: 0)
        XCTAssertEqual(h.size, 3 * layout.blockSize + 100)
        return h
    }

    private func assertBlockReads(_ h: Harness, _ index: Int, _ message: String = "",
                                  file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertNoThrow(XCTAssertEqual(try h.readBlock(index), h.modelBlock(index), message, file: file, line: line),
                         message, file: file, line: line)
    }

    func testFlippedByteInBlock1IsDetectedOnlyInBlock1() throws {
        for layout in layouts {
            let bs = layout.blockSize
            // Nonce, first/middle/last ciphertext byte, tag.
            for position in [0, 11, 12, 12 + bs / 2, 12 + bs - 1, 12 + bs, 12 + bs + 15] {
                let h = try fixture(layout)
                let at = layout.diskOffset(ofBlock: 1) + position
                let original = h.raw(at: at, count: 1)[0]
                h.rawWrite([original ^ 0x01], at: at)
                let what = "bs \(bs), byte \(position) of block 1"

                assertCorruptBlock(1, what) { try h.readBlock(1) }
                assertCorruptBlock(1, what) { try h.read(at: bs + 5, count: 10) }          // partial read
                assertCorruptBlock(1, what) { try h.read(at: 0, count: 3 * bs) }           // spanning read
                assertCorruptBlock(1, what) { try h.read(at: bs - 1, count: 2) }           // straddling 0|1
                assertBlockReads(h, 0, what)
                assertBlockReads(h, 2, what)
                assertBlockReads(h, 3, what)
                // Read-modify-write of the damaged block fails too, and changes nothing.
                let before = h.raw(at: 0, count: h.backingSize)
                assertCorruptBlock(1, what) { try h.write([1, 2, 3], at: bs + 7) }
                XCTAssertEqual(h.raw(at: 0, count: h.backingSize), before, "a failed write must not write")
                // A full overwrite of the block replaces it and heals it.
                try h.write([UInt8](repeating: 0xAB, count: bs), at: bs)
                assertBlockReads(h, 1, what)

                // Restoring the byte in a fresh copy makes it readable again.
                let g = try fixture(layout, name: "g")
                let at2 = layout.diskOffset(ofBlock: 1) + position
                let b = g.raw(at: at2, count: 1)[0]
                g.rawWrite([b ^ 0x80], at: at2)
                assertCorruptBlock(1, what) { try g.readBlock(1) }
                g.rawWrite([b], at: at2)
                assertBlockReads(g, 1, what)
            }
        }
    }

    func testFlippedByteInPartialLastBlock() throws {
        for layout in layouts {
            let h = try fixture(layout)
            h.rawWrite([h.raw(at: layout.diskOffset(ofBlock: 3) + 20, count: 1)[0] ^ 0xFF], at: layout.diskOffset(ofBlock: 3) + 20)
            assertCorruptBlock(3) { try h.readBlock(3) }
            assertCorruptBlock(3) { try h.read(at: 3 * layout.blockSize + 99, count: 1) }
            // Shrinking into the damaged block has to open it, and fails.
            assertCorruptBlock(3) { try h.truncate(to: 3 * layout.blockSize + 50) }
            // Growing re-seals the old last block, and fails.
            assertCorruptBlock(3) { try h.truncate(to: 5 * layout.blockSize) }
            assertBlockReads(h, 2)
        }
    }

    func testSwappedBlocksAreDetected() throws {
        for layout in layouts {
            let h = try fixture(layout)
            let b0 = h.rawDiskBlock(0), b1 = h.rawDiskBlock(1)
            XCTAssertEqual(b0.count, b1.count)
            h.rawWrite(b1, at: layout.diskOffset(ofBlock: 0))
            h.rawWrite(b0, at: layout.diskOffset(ofBlock: 1))
            assertCorruptBlock(0, "bs \(layout.blockSize)") { try h.readBlock(0) }
            assertCorruptBlock(1, "bs \(layout.blockSize)") { try h.readBlock(1) }
            assertBlockReads(h, 2)
            // Swapping back restores both.
            h.rawWrite(b0, at: layout.diskOffset(ofBlock: 0))
            h.rawWrite(b1, at: layout.diskOffset(ofBlock: 1))
            assertBlockReads(h, 0)
            assertBlockReads(h, 1)
            // A block duplicated over another (replay at another index) is detected as well.
            h.rawWrite(b0, at: layout.diskOffset(ofBlock: 2))
            assertCorruptBlock(2) { try h.readBlock(2) }
        }
    }

    func testBlockFromAnotherFileIsDetected() throws {
        for layout in layouts {
            let key = try SecretBytes.random(count: 32)
            let a = try fixture(layout, name: "a", key: key, seed: 5)
            let b = try fixture(layout, name: "b", key: key, seed: 5)   // same key, same content, other file id
            XCTAssertNotEqual(a.file.fileID, b.file.fileID)
            XCTAssertEqual(a.model, b.model)
            a.rawWrite(b.rawDiskBlock(1), at: layout.diskOffset(ofBlock: 1))
            assertCorruptBlock(1, "bs \(layout.blockSize)") { try a.readBlock(1) }
            assertBlockReads(a, 0)
            assertBlockReads(a, 2)

            // Control: with the same file id the same block is accepted, so it is the id that binds.
            let c = try fixture(layout, name: "c", key: key, fileID: a.file.fileID, seed: 6)
            c.rawWrite(b.rawDiskBlock(1), at: layout.diskOffset(ofBlock: 1))
            assertCorruptBlock(1) { try c.readBlock(1) }
            let d = try fixture(layout, name: "d", key: key, fileID: a.file.fileID, seed: 6)
            c.rawWrite(d.rawDiskBlock(1), at: layout.diskOffset(ofBlock: 1))
            assertBlockReads(c, 1)
        }
    }

    func testWrongKeyFailsEveryBlock() throws {
        for layout in layouts {
            let h = try fixture(layout)
            let other = try SecretBytes.random(count: 32)
            for index in 0...3 {
                assertCorruptBlock(index) {
                    try h.read(at: index * layout.blockSize, count: layout.plaintextLength(ofBlock: index, plaintextSize: h.size),
                               key: other)
                }
            }
        }
    }

    func testZeroNonceOnNonZeroBlockIsCorrupt() throws {
        for layout in layouts {
            let h = try fixture(layout)
            h.rawWrite([UInt8](repeating: 0, count: 12), at: layout.diskOffset(ofBlock: 1))
            assertCorruptBlock(1) { try h.readBlock(1) }
            guard case .corruptBlock(_, let reason)? = expectContentError({ try h.readBlock(1) }) else {
                return XCTFail("expected corruptBlock")
            }
            XCTAssertTrue(reason.contains("zero nonce"), reason)
            // Only the tag's last byte non-zero: still not a hole.
            let g = try fixture(layout, name: "g")
            var block = [UInt8](repeating: 0, count: layout.diskBlockSize)
            block[block.count - 1] = 1
            g.rawWrite(block, at: layout.diskOffset(ofBlock: 2))
            assertCorruptBlock(2) { try g.readBlock(2) }
            assertBlockReads(g, 1)
        }
    }

    func testAllZeroBlockReadsAsZeros() throws {
        for layout in layouts {
            let h = try fixture(layout)
            h.rawWrite([UInt8](repeating: 0, count: layout.diskBlockSize), at: layout.diskOffset(ofBlock: 1))
            XCTAssertEqual(try h.readBlock(1), [UInt8](repeating: 0, count: layout.blockSize))
            XCTAssertEqual(try h.read(at: layout.blockSize + 3, count: 5), [0, 0, 0, 0, 0])
            assertBlockReads(h, 0)
            assertBlockReads(h, 2)
            // The partial last block too.
            h.rawWrite([UInt8](repeating: 0, count: 100 + 28), at: layout.diskOffset(ofBlock: 3))
            XCTAssertEqual(try h.readBlock(3), [UInt8](repeating: 0, count: 100))
            // A write into the zeroed block treats it as zeros (the model is stale here: compare explicitly).
            try h.write([7, 7], at: layout.blockSize + 10)
            var expected = [UInt8](repeating: 0, count: layout.blockSize)
            expected[10] = 7; expected[11] = 7
            XCTAssertEqual(try h.readBlock(1), expected)
        }
    }

    func testBackingFileShorterThanSizeIsCorrupt() throws {
        for layout in layouts {
            let h = try fixture(layout)
            _ = ftruncate(h.fd, off_t(layout.diskOffset(ofBlock: 2) + 10))
            assertBlockReads(h, 0)
            assertBlockReads(h, 1)
            assertCorruptBlock(2) { try h.readBlock(2) }
            assertCorruptBlock(3) { try h.readBlock(3) }
            assertCorruptBlock(2) { try h.read(at: 0, count: h.size) }
            // Torn in the middle of the last block.
            let g = try fixture(layout, name: "g")
            _ = ftruncate(g.fd, off_t(g.backingSize - 1))
            XCTAssertEqual(layout.plaintextSize(backingSize: g.backingSize), g.size - 1, "the torn file looks one byte shorter")
            assertCorruptBlock(3) { try g.readBlock(3) }
            assertBlockReads(g, 2)
        }
    }
}

