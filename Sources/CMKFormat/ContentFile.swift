import Glibc
import CMKCrypto

/// Reads, writes and truncates one file's encrypted content through its backing descriptor.
///
/// It knows the block format and nothing of where the key comes from or of locking: the caller
/// holds the file's lock (shared for `read`, exclusive otherwise) and tracks the plaintext size,
/// which it passes in and gets back, so no call needs an `fstat`.
public struct ContentFile: Sendable {
    public let fd: Int32
    public let fileID: FileID
    public let layout: BlockLayout

    public init(fd: Int32, fileID: FileID, layout: BlockLayout) {
        self.fd = fd
        self.fileID = fileID
        self.layout = layout
    }

    /// Writes the header of a new, empty backing file.
    public func writeHeader() throws(ContentError) {
        let header = UnsafeMutableRawBufferPointer.allocate(byteCount: FileHeader.size, alignment: 16)
        defer { header.deallocate() }
        header.copyBytes(from: FileHeader.encode(fileID))
        try BackingIO.pwrite(fd, header.baseAddress!, count: header.count, offset: 0)
    }

    /// Reads the file id from the header of the backing file `fd`.
    public static func readFileID(fd: Int32) throws(ContentError) -> FileID {
        let header = UnsafeMutableRawBufferPointer.allocate(byteCount: FileHeader.size, alignment: 16)
        defer { header.deallocate() }
        let n = try BackingIO.pread(fd, header.baseAddress!, count: header.count, offset: 0)
        return try FileHeader.decode(UnsafeRawBufferPointer(rebasing: header[0..<n]))
    }

    // MARK: read

    /// Reads up to `dest.count` bytes at `offset` of a file of `size` bytes; returns the count read.
    public func read(into dest: UnsafeMutableRawBufferPointer, at offset: Int, size: Int,
                     key: SecretBytes, scratch: ContentScratch) throws(ContentError) -> Int {
        guard offset < size else { return 0 }
        let end = min(offset + min(dest.count, size - offset), size)
        guard offset < end else { return 0 }
        let bs = layout.blockSize
        let first = offset / bs, last = (end - 1) / bs
        let diskStart = layout.diskOffset(ofBlock: first)
        let diskCount = layout.diskOffset(ofBlock: last) + layout.plaintextLength(ofBlock: last, plaintextSize: size)
            + BlockLayout.overhead - diskStart
        scratch.reserveDisk(diskCount)
        let got = try BackingIO.pread(fd, scratch.disk.baseAddress!, count: diskCount, offset: diskStart)
        guard got == diskCount else {
            throw .corruptBlock(index: first + got / layout.diskBlockSize, reason: "backing file is shorter than its size says")
        }
        try key.withUnsafeBytes { k throws(ContentError) in
            var diskPos = 0
            for index in first...last {
                let length = layout.plaintextLength(ofBlock: index, plaintextSize: size)
                let blockStart = index * bs
                let from = max(offset, blockStart) - blockStart, to = min(end, blockStart + length) - blockStart
                let src = UnsafeRawBufferPointer(start: scratch.disk.baseAddress! + diskPos, count: length + BlockLayout.overhead)
                let destPos = blockStart + from - offset
                if from == 0 && to == length {
                    try scratch.openBlock(src, index: index, fileID: fileID, key: k, into: dest.baseAddress! + destPos)
                } else {
                    try scratch.openBlock(src, index: index, fileID: fileID, key: k, into: scratch.block.baseAddress!)
                    (dest.baseAddress! + destPos).copyMemory(from: scratch.block.baseAddress! + from, byteCount: to - from)
                    secureZero(UnsafeMutableRawBufferPointer(rebasing: scratch.block[0..<length]))
                }
                diskPos += length + BlockLayout.overhead
            }
        }
        return end - offset
    }

    // MARK: write

    /// Writes `data` at `offset` of a file of `size` bytes (a gap past the end becomes a hole);
    /// returns the new size.
    public func write(_ data: UnsafeRawBufferPointer, at offset: Int, size: Int,
                      key: SecretBytes, scratch: ContentScratch) throws(ContentError) -> Int {
        guard data.count > 0 else { return size }
        guard layout.fits(offset: offset, length: data.count) else { throw .io(call: "write", errno: EFBIG) }
        var size = size
        if offset > size {
            try truncate(from: size, to: offset, key: key, scratch: scratch)
            size = offset
        }
        let bs = layout.blockSize
        let end = offset + data.count, newSize = max(size, end)
        let first = offset / bs, last = (end - 1) / bs
        let diskStart = layout.diskOffset(ofBlock: first)
        let diskCount = layout.diskOffset(ofBlock: last) + layout.plaintextLength(ofBlock: last, plaintextSize: newSize)
            + BlockLayout.overhead - diskStart
        scratch.reserveDisk(diskCount)
        try key.withUnsafeBytes { k throws(ContentError) in
            var diskPos = 0
            for index in first...last {
                let blockStart = index * bs
                let newLength = layout.plaintextLength(ofBlock: index, plaintextSize: newSize)
                let from = max(offset, blockStart) - blockStart, to = min(end, blockStart + newLength) - blockStart
                let out = scratch.disk.baseAddress! + diskPos
                let srcPos = blockStart + from - offset
                if from == 0 && to == newLength {
                    try scratch.sealBlock(UnsafeRawBufferPointer(start: data.baseAddress! + srcPos, count: newLength),
                                          index: index, fileID: fileID, key: k, into: out)
                } else {
                    // Read-modify-write of a partial block: only the first and last block can be one.
                    let block = UnsafeMutableRawBufferPointer(rebasing: scratch.block[0..<newLength])
                    try loadBlock(index, size: size, into: block, key: k, scratch: scratch)
                    (block.baseAddress! + from).copyMemory(from: data.baseAddress! + srcPos, byteCount: to - from)
                    try scratch.sealBlock(UnsafeRawBufferPointer(block), index: index, fileID: fileID, key: k, into: out)
                    secureZero(block)
                }
                diskPos += newLength + BlockLayout.overhead
            }
            try writeExtending(diskCount, at: diskStart, oldEnd: layout.backingSize(plaintextSize: size), scratch: scratch)
        }
        return newSize
    }

    /// Writes the sealed blocks so that running out of space leaves the file as it was.
    ///
    /// A write that rewrites bytes of the file (its old last block) and extends it reserves the
    /// new room first: a short write could otherwise tear that block. A write that only adds
    /// blocks past the old end (every new file's first write, tar's whole files) cannot tear
    /// anything, so it reserves nothing (an fallocate per created file, issue 20): if it fails,
    /// the file is cut back to its old end, dropping whatever part of the new blocks it wrote.
    private func writeExtending(_ diskCount: Int, at diskStart: Int, oldEnd: Int, scratch: ContentScratch) throws(ContentError) {
        if diskStart < oldEnd {
            if diskStart + diskCount > oldEnd {
                try BackingIO.reserve(fd, offset: oldEnd, count: diskStart + diskCount - oldEnd)
            }
            return try BackingIO.pwrite(fd, scratch.disk.baseAddress!, count: diskCount, offset: diskStart)
        }
        do { try BackingIO.pwrite(fd, scratch.disk.baseAddress!, count: diskCount, offset: diskStart) } catch {
            try? BackingIO.ftruncate(fd, oldEnd)
            throw error
        }
    }

    /// Decrypts the current content of block `index` into `block`, zero-filling past the old end.
    /// Writes only grow blocks, so the old content always fits in `block`.
    private func loadBlock(_ index: Int, size: Int, into block: UnsafeMutableRawBufferPointer,
                           key: UnsafeRawBufferPointer, scratch: ContentScratch) throws(ContentError) {
        let existing = layout.plaintextLength(ofBlock: index, plaintextSize: size)
        precondition(existing <= block.count, "a write never shrinks a block")
        block.initializeMemory(as: UInt8.self, repeating: 0)
        guard existing > 0 else { return }
        // `disk` holds the request's output, so the old block is staged in a buffer of its own.
        let diskLength = existing + BlockLayout.overhead
        let staging = scratch.stage.baseAddress!
        let got = try BackingIO.preadInternal(fd, staging, count: diskLength, offset: layout.diskOffset(ofBlock: index))
        guard got == diskLength else { throw .corruptBlock(index: index, reason: "backing file is shorter than its size says") }
        try scratch.openBlock(UnsafeRawBufferPointer(start: staging, count: diskLength), index: index, fileID: fileID,
                              key: key, into: block.baseAddress!)
    }

    // MARK: truncate

    /// Changes the size from `size` to `newSize`. Growing leaves a hole (zero bytes on disk, which
    /// read as zeros) and never writes data blocks; shrinking re-seals the new last block.
    public func truncate(from size: Int, to newSize: Int, key: SecretBytes, scratch: ContentScratch) throws(ContentError) {
        guard newSize != size else { return }
        guard layout.fits(offset: newSize, length: 0) else { throw .io(call: "truncate", errno: EFBIG) }
        let bs = layout.blockSize
        // The block whose length changes: the old last block when growing, the new last when shrinking.
        let pivot = newSize > size ? size : newSize
        if pivot % bs != 0 {
            let index = pivot / bs
            let newLength = layout.plaintextLength(ofBlock: index, plaintextSize: newSize)
            try key.withUnsafeBytes { k throws(ContentError) in
                try resealBlock(index, size: size, newLength: newLength, key: k, scratch: scratch)
            }
        }
        try BackingIO.ftruncate(fd, layout.backingSize(plaintextSize: newSize))
    }

    /// Rewrites block `index` with `newLength` bytes: its old content cut or zero-extended.
    /// A hole stays a hole (a prefix or zero extension of zero bytes is still zero bytes).
    private func resealBlock(_ index: Int, size: Int, newLength: Int, key: UnsafeRawBufferPointer,
                             scratch: ContentScratch) throws(ContentError) {
        let oldLength = layout.plaintextLength(ofBlock: index, plaintextSize: size)
        let diskLength = oldLength + BlockLayout.overhead
        scratch.reserveDisk(max(diskLength, newLength + BlockLayout.overhead))
        let disk = scratch.disk.baseAddress!
        let got = try BackingIO.preadInternal(fd, disk, count: diskLength, offset: layout.diskOffset(ofBlock: index))
        guard got == diskLength else { throw .corruptBlock(index: index, reason: "backing file is shorter than its size says") }
        if isAllZero(UnsafeRawBufferPointer(start: disk, count: diskLength)) { return }
        let block = scratch.block
        try scratch.openBlock(UnsafeRawBufferPointer(start: disk, count: diskLength), index: index, fileID: fileID,
                              key: key, into: block.baseAddress!)
        if newLength > oldLength {
            (block.baseAddress! + oldLength).initializeMemory(as: UInt8.self, repeating: 0, count: newLength - oldLength)
        }
        try scratch.sealBlock(UnsafeRawBufferPointer(rebasing: block[0..<newLength]), index: index, fileID: fileID,
                              key: key, into: disk)
        secureZero(block)
        if newLength > oldLength {
            try BackingIO.reserve(fd, offset: layout.diskOffset(ofBlock: index) + diskLength, count: newLength - oldLength)
        }
        try BackingIO.pwrite(fd, disk, count: newLength + BlockLayout.overhead, offset: layout.diskOffset(ofBlock: index))
    }
}
