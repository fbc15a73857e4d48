import CMKCrypto

/// Per-worker state for sealing and opening blocks: a cipher context, a nonce batch and a disk
/// buffer, all reused across requests so the hot path allocates nothing per block.
///
/// Not thread-safe: a worker takes one from a pool for the length of a request.
public final class ContentScratch {
    let cipher = AESGCM()
    var nonces = NonceSource()
    /// Holds the on-disk bytes of a request's blocks; grows to the largest request seen.
    private(set) var disk: UnsafeMutableRawBufferPointer
    /// One decrypted block, for partial-block reads and read-modify-write. Wiped after use.
    let block: UnsafeMutableRawBufferPointer
    /// The on-disk bytes of one old block during read-modify-write.
    let stage: UnsafeMutableRawBufferPointer
    /// The 24-byte AAD: file id ‖ block index (big-endian).
    let aad: UnsafeMutableRawBufferPointer
    public let layout: BlockLayout

    public init(layout: BlockLayout) {
        self.layout = layout
        disk = .allocate(byteCount: layout.diskBlockSize * 4, alignment: 64)
        block = .allocate(byteCount: layout.blockSize, alignment: 64)
        stage = .allocate(byteCount: layout.diskBlockSize, alignment: 64)
        aad = .allocate(byteCount: FileID.size + 8, alignment: 16)
    }

    deinit {
        secureZero(block)
        secureZero(out)
        out.deallocate()
        disk.deallocate()
        block.deallocate()
        stage.deallocate()
        aad.deallocate()
    }

    /// Wipes the cipher context's copy of the last key used (see `AESGCM.reset`).
    public func forgetKey() { cipher.reset() }

    /// Plaintext staging for a read request's reply; grows to the largest request seen. Not
    /// wiped per request: it holds file content, which the kernel's page cache holds too, never
    /// key material.
    private var out: UnsafeMutableRawBufferPointer = .allocate(byteCount: 0, alignment: 64)

    /// A buffer of `count` bytes for decrypted output (reused across requests).
    public func output(_ count: Int) -> UnsafeMutableRawBufferPointer {
        if out.count < count {
            secureZero(out)
            out.deallocate()
            out = .allocate(byteCount: count, alignment: 64)
        }
        return UnsafeMutableRawBufferPointer(rebasing: out[0..<count])
    }

    /// Ensures `disk` holds at least `count` bytes.
    func reserveDisk(_ count: Int) {
        guard disk.count < count else { return }
        disk.deallocate()
        disk = .allocate(byteCount: count, alignment: 64)
    }

    func setAAD(fileID: FileID, block index: Int) {
        fileID.bytes.withUnsafeBytes { aad.copyMemory(from: $0) }
        var be = UInt64(index).bigEndian
        withUnsafeBytes(of: &be) { (aad.baseAddress! + FileID.size).copyMemory(from: $0.baseAddress!, byteCount: 8) }
    }

    /// Seals `plaintext` as block `index` into `out` (`plaintext.count + 28` bytes).
    func sealBlock(_ plaintext: UnsafeRawBufferPointer, index: Int, fileID: FileID, key: UnsafeRawBufferPointer,
                   into out: UnsafeMutableRawPointer) throws(ContentError) {
        setAAD(fileID: fileID, block: index)
        do {
            // An all-zero nonce marks a hole; redraw in the (2^-96) case that one comes up.
            repeat { try nonces.fill(out) } while isAllZero(UnsafeRawBufferPointer(start: out, count: 12))
            try cipher.seal(key: key, nonce: out, aad: UnsafeRawBufferPointer(aad), plaintext: plaintext,
                            ciphertext: out + 12, tag: out + 12 + plaintext.count)
        } catch { throw .crypto(error) }
    }

    /// Opens on-disk block `index` (`disk.count` = plaintext length + 28) into `out`.
    /// A block of all zero bytes is a hole and reads as zeros.
    func openBlock(_ disk: UnsafeRawBufferPointer, index: Int, fileID: FileID, key: UnsafeRawBufferPointer,
                   into out: UnsafeMutableRawPointer) throws(ContentError) {
        let length = disk.count - BlockLayout.overhead
        guard length > 0 else { throw .corruptBlock(index: index, reason: "block is \(disk.count) bytes, too short") }
        let base = disk.baseAddress!
        if isAllZero(UnsafeRawBufferPointer(start: base, count: 12)) {
            guard isAllZero(disk) else { throw .corruptBlock(index: index, reason: "zero nonce on a non-zero block") }
            out.initializeMemory(as: UInt8.self, repeating: 0, count: length)
            return
        }
        setAAD(fileID: fileID, block: index)
        do {
            try cipher.open(key: key, nonce: base, aad: UnsafeRawBufferPointer(aad),
                            ciphertext: UnsafeRawBufferPointer(start: base + 12, count: length),
                            tag: base + 12 + length, plaintext: out)
        } catch .authenticationFailed {
            throw .corruptBlock(index: index, reason: "authentication failed (tampered, moved or swapped)")
        } catch { throw .crypto(error) }
    }
}

/// Never inlined: inlined into `openBlock`/`sealBlock`, Swift 6.3's optimizer (-O) made their
/// typed-throws callers see an error that was never thrown, with an uninitialized payload (a write
/// over a hole failed with a garbage errno, then the daemon aborted or crashed; found by
/// scripts/stress.py on a release build, confirmed under valgrind). The call costs nothing next to
/// a 4 KiB AES-GCM operation. `ContentFileTests` cannot see it (debug); `ReleaseBuildTests`, which
/// builds release and runs the stress seeds that crashed it, can.
@inline(never)
func isAllZero(_ bytes: UnsafeRawBufferPointer) -> Bool {
    // Word-at-a-time: this runs on every block read when checking for holes.
    var i = 0
    let n = bytes.count
    let base = bytes.baseAddress!
    while i + 8 <= n {
        if base.loadUnaligned(fromByteOffset: i, as: UInt64.self) != 0 { return false }
        i += 8
    }
    while i < n {
        if base.load(fromByteOffset: i, as: UInt8.self) != 0 { return false }
        i += 1
    }
    return true
}
