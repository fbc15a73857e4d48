/// Offset math between plaintext and the backing file. Pure arithmetic, no I/O.
///
/// Backing file = header ‖ block 0 ‖ block 1 ‖ …; each block on disk is
/// `nonce(12) ‖ ciphertext(n) ‖ tag(16)` where n = `blockSize` for every block but the last,
/// which holds 1…`blockSize` bytes. So the plaintext size follows from the backing size alone.
public struct BlockLayout: Sendable, Equatable {
    public static let defaultBlockSize = 4096
    public static let overhead = 12 + 16
    public let blockSize: Int

    public init(blockSize: Int = BlockLayout.defaultBlockSize) {
        precondition(blockSize >= 512 && blockSize <= 1 << 20 && blockSize.nonzeroBitCount == 1,
                     "block size is a power of two in 512…1 MiB")
        self.blockSize = blockSize
    }

    /// Bytes one full block takes on disk.
    public var diskBlockSize: Int { blockSize + Self.overhead }

    /// The largest plaintext size whose backing size is still an `Int` (an `off_t`): sizes and
    /// offsets past it are EFBIG, never an arithmetic overflow (which would stop the daemon).
    /// The backing filesystem's own limit (ext4: 16 TiB) is lower and answers EFBIG first.
    public var maxPlaintextSize: Int { (Int.max - FileHeader.size) / diskBlockSize * blockSize }

    /// Whether `length` bytes at `offset` end within `maxPlaintextSize`.
    public func fits(offset: Int, length: Int) -> Bool {
        offset >= 0 && length >= 0 && offset <= maxPlaintextSize && length <= maxPlaintextSize - offset
    }

    /// Where block `index` starts in the backing file.
    public func diskOffset(ofBlock index: Int) -> Int { FileHeader.size + index * diskBlockSize }

    /// Plaintext bytes in block `index` of a file of `plaintextSize` bytes (0 past the end).
    public func plaintextLength(ofBlock index: Int, plaintextSize: Int) -> Int {
        max(0, min(blockSize, plaintextSize - index * blockSize))
    }

    /// The backing size of a file holding `plaintextSize` bytes.
    public func backingSize(plaintextSize: Int) -> Int {
        let full = plaintextSize / blockSize, rest = plaintextSize % blockSize
        return FileHeader.size + full * diskBlockSize + (rest > 0 ? rest + Self.overhead : 0)
    }

    /// The plaintext size of a backing file of `backingSize` bytes, or nil when the size is
    /// impossible (a torn header or a last block too short to hold nonce and tag).
    public func plaintextSize(backingSize: Int) -> Int? {
        if backingSize == FileHeader.size { return 0 }
        guard backingSize > FileHeader.size else { return nil }
        let body = backingSize - FileHeader.size
        let full = body / diskBlockSize, rest = body % diskBlockSize
        if rest == 0 { return full * blockSize }
        guard rest > Self.overhead else { return nil }
        return full * blockSize + rest - Self.overhead
    }

    /// The plaintext size applications see. An impossible backing size (the file ends inside a
    /// block's nonce or tag) shows the readable prefix and one byte more: the kernel only asks
    /// for bytes below the size, so a read reaches the damaged block and fails with EIO, where
    /// the prefix alone would read as a silently shorter file.
    public func displaySize(backingSize: Int) -> Int {
        if let size = plaintextSize(backingSize: backingSize) { return size }
        guard backingSize > FileHeader.size else { return 0 }
        return (backingSize - FileHeader.size) / diskBlockSize * blockSize + 1
    }
}
