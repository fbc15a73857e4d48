import Glibc
import CMKCrypto
import CMKFormat
import CMKSystem

// The content format: the 24-byte header and the sealed blocks of a backing file.

/// The block size of the block target: the smallest legal one, so an input of a few KiB spans
/// several blocks (libFuzzer's default inputs are at most 4 KiB).
let fuzzLayout = BlockLayout(blockSize: 512)
let fuzzContentKey = fixedKey(0x42)
let fuzzFileID = FileID(bytes: (0..<16).map { UInt8(0xA0 + $0) })!

/// The plaintext every block seed holds at `offset`, so any block that authenticates can be
/// checked byte for byte: a fuzzed file that reads successfully must read exactly this (or
/// zeros, for a hole).
func expectedPlaintext(_ offset: Int) -> UInt8 { UInt8(truncatingIfNeeded: offset &* 167 &+ 13) }

/// An anonymous file holding `bytes`, in the (tmpfs) scratch directory and already unlinked.
func memoryFile(_ bytes: [UInt8]) -> FileDescriptor {
    do {
        let file = try FileDescriptor.anonymousFile(in: scratchDirectory)
        try file.descriptor.writeAll(bytes)
        return file
    } catch {
        // The harness's own setup (scratch file, seed), never the fuzz input: stopping is the
        // only honest answer, and the message says it is not a finding.
        fatalError("fuzz harness: cannot make a backing file: \(error)")
    }
}

/// `FileHeader.decode` and `ContentFile.readFileID` on arbitrary bytes: they agree, refuse what
/// is not a header, and a header they accept re-encodes to the same magic, version and id.
public func fuzzFileHeader(_ data: [UInt8]) throws(FuzzViolation) {
    let decoded = data.withUnsafeBytes { raw -> FileID? in try? FileHeader.decode(raw) }
    let backing = memoryFile(data)
    let fd = backing.rawValue
    let read = try? ContentFile.readFileID(fd: fd)
    guard decoded == read else {
        throw FuzzViolation("header", "decode gave \(String(describing: decoded)) but readFileID gave \(String(describing: read))")
    }
    guard let id = decoded else { return }
    let encoded = FileHeader.encode(id)
    // Bytes 6–7 are the reserved flags, which decode ignores (docs/on-disk-format.md).
    guard data.count >= FileHeader.size, Array(data[0..<6]) == Array(encoded[0..<6]),
          Array(data[8..<24]) == Array(encoded[8..<24]) else {
        throw FuzzViolation("header", "accepted a header that does not re-encode to itself")
    }
    let again = encoded.withUnsafeBytes { raw -> FileID? in try? FileHeader.decode(raw) }
    guard again == id else { throw FuzzViolation("header", "decode(encode(id)) != id") }
}

/// A whole backing file of arbitrary bytes, read, truncated and written through `ContentFile`
/// with the key the seeds were sealed with. Every call must end in a `ContentError` or in
/// exactly the plaintext the seeds hold: a block that authenticates is never wrong data, a
/// block that does not never reads at all.
public func fuzzBlock(_ data: [UInt8]) throws(FuzzViolation) {
    let backing = memoryFile(data)
    let fd = backing.rawValue
    guard let id = try? ContentFile.readFileID(fd: fd) else { return }
    let file = ContentFile(fd: fd, fileID: id, layout: fuzzLayout)
    let scratch = ContentScratch(layout: fuzzLayout)
    var size = fuzzLayout.displaySize(backingSize: data.count)

    // The whole file, then a range that starts and ends inside blocks (the copy-out path).
    try checkRead(file, scratch, offset: 0, count: size, size: size)
    if size > 1 {
        let offset = Int(data[data.count - 1]) * 7 % size
        try checkRead(file, scratch, offset: offset, count: min(700, size - offset), size: size)
    }
    // Shrinking re-seals the new last block (read, cut, seal): it must refuse a bad block too.
    if size > 0 {
        do {
            try file.truncate(from: size, to: size - 1, key: fuzzContentKey, scratch: scratch)
            size -= 1
            try checkRead(file, scratch, offset: 0, count: size, size: size)
        } catch let error as ContentError {
            _ = error
        } catch let violation as FuzzViolation {
            throw violation
        } catch {
            throw FuzzViolation("block", "truncate threw a non-content error: \(error)")
        }
    }
    // A one-byte write inside a block is a read-modify-write of that block.
    if size > 0 {
        let at = size / 2
        var byte = expectedPlaintext(at)
        do {
            let newSize = try withUnsafeBytes(of: &byte) { raw throws(ContentError) in
                try file.write(raw, at: at, size: size, key: fuzzContentKey, scratch: scratch)
            }
            guard newSize == size else { throw FuzzViolation("block", "a write inside the file changed its size") }
            let back = UnsafeMutableRawBufferPointer.allocate(byteCount: 1, alignment: 1)
            defer { back.deallocate() }
            let n = try file.read(into: back, at: at, size: size, key: fuzzContentKey, scratch: scratch)
            guard n == 1, back[0] == byte else { throw FuzzViolation("block", "a byte written at \(at) did not read back") }
        } catch let violation as FuzzViolation {
            throw violation
        } catch is ContentError {
        } catch {
            throw FuzzViolation("block", "write threw a non-content error: \(error)")
        }
    }
}

/// Reads `count` bytes at `offset`; on success every block of the range must hold the seeds'
/// plaintext or be all zeros (a hole).
private func checkRead(_ file: ContentFile, _ scratch: ContentScratch, offset: Int, count: Int, size: Int) throws(FuzzViolation) {
    guard count > 0 else { return }
    let out = UnsafeMutableRawBufferPointer.allocate(byteCount: count, alignment: 16)
    defer { out.deallocate() }
    out.initializeMemory(as: UInt8.self, repeating: 0xEE)
    let n: Int
    do { n = try file.read(into: out, at: offset, size: size, key: fuzzContentKey, scratch: scratch) } catch { return }
    guard n == count else { throw FuzzViolation("block", "read of \(count) bytes at \(offset) returned \(n)") }
    let bs = fuzzLayout.blockSize
    var pos = offset
    while pos < offset + count {
        let blockEnd = min(offset + count, (pos / bs + 1) * bs)
        let chunk = UnsafeRawBufferPointer(rebasing: out[(pos - offset)..<(blockEnd - offset)])
        let isHole = chunk.allSatisfy { $0 == 0 }
        let isExpected = chunk.indices.allSatisfy { chunk[$0] == expectedPlaintext(pos + $0) }
        guard isHole || isExpected else {
            throw FuzzViolation("block", "block \(pos / bs) read successfully but holds bytes nobody sealed (offset \(pos))")
        }
        pos = blockEnd
    }
}

func headerSeeds() -> [(name: String, bytes: [UInt8])] {
    [("header", FileHeader.encode(fuzzFileID)),
     ("header-and-block", sealedFile(plaintextSize: 100))]
}

/// A real backing file of `plaintextSize` bytes of `expectedPlaintext`, written by `ContentFile`.
func sealedFile(plaintextSize: Int, holeAt hole: Int? = nil) -> [UInt8] {
    let backing = memoryFile([])
    let fd = backing.rawValue
    let file = ContentFile(fd: fd, fileID: fuzzFileID, layout: fuzzLayout)
    let scratch = ContentScratch(layout: fuzzLayout)
    do {
        try file.writeHeader()
        let plaintext = (0..<plaintextSize).map(expectedPlaintext)
        if let hole {
            // Grow over the hole first (a truncate up leaves zeros), then write after it.
            let after = Array(plaintext[(hole + fuzzLayout.blockSize)...])
            try file.truncate(from: 0, to: hole + fuzzLayout.blockSize, key: fuzzContentKey, scratch: scratch)
            _ = try after.withUnsafeBytes { raw throws(ContentError) in
                try file.write(raw, at: hole + fuzzLayout.blockSize, size: hole + fuzzLayout.blockSize, key: fuzzContentKey, scratch: scratch)
            }
            let before = Array(plaintext[0..<hole])
            _ = try before.withUnsafeBytes { raw throws(ContentError) in
                try file.write(raw, at: 0, size: plaintextSize, key: fuzzContentKey, scratch: scratch)
            }
        } else {
            _ = try plaintext.withUnsafeBytes { raw throws(ContentError) in
                try file.write(raw, at: 0, size: 0, key: fuzzContentKey, scratch: scratch)
            }
        }
    } catch {
        // The harness's own setup (scratch file, seed), never the fuzz input: stopping is the
        // only honest answer, and the message says it is not a finding.
        fatalError("fuzz harness: cannot seal a seed: \(error)")
    }
    do {
        return try backing.descriptor.preadFully(count: Int(backing.descriptor.fstat().st_size), at: 0)
    } catch {
        // The harness's own setup (scratch file, seed), never the fuzz input: stopping is the
        // only honest answer, and the message says it is not a finding.
        fatalError("fuzz harness: cannot read a seed back: \(error)")
    }
}

func blockSeeds() -> [(name: String, bytes: [UInt8])] {
    [("empty", sealedFile(plaintextSize: 0)),
     ("one-byte", sealedFile(plaintextSize: 1)),
     ("one-block", sealedFile(plaintextSize: 512)),
     ("three-and-a-half-blocks", sealedFile(plaintextSize: 1800)),
     ("hole-in-the-middle", sealedFile(plaintextSize: 1600, holeAt: 512))]
}
