import COpenSSL

/// OpenSSL's CSPRNG (`RAND_bytes`).
public enum SecureRandom {
    /// Fills `buffer` with random bytes.
    public static func fill(_ buffer: UnsafeMutableRawBufferPointer) throws(CryptoError) {
        guard let base = buffer.baseAddress, buffer.count > 0 else { return }
        guard RAND_bytes(base.assumingMemoryBound(to: UInt8.self), Int32(buffer.count)) == 1 else {
            throw .randomFailed
        }
    }

    /// `count` random bytes for non-secret values (ids, nonces).
    public static func bytes(_ count: Int) throws(CryptoError) -> [UInt8] {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: count, alignment: 16)
        defer { buffer.deallocate() }
        try fill(buffer)
        return Array(buffer)
    }
}

/// Hands out 96-bit GCM nonces from a batch of random bytes.
///
/// One `RAND_bytes` call per nonce costs as much as sealing a 4 KiB block, so nonces are drawn
/// from a 4 KiB batch refilled when exhausted. Not thread-safe: each worker owns one.
public struct NonceSource: ~Copyable {
    public static let nonceSize = 12
    private static let batchSize = 4096 - (4096 % nonceSize)
    private let batch: UnsafeMutableRawBufferPointer
    private var next: Int

    public init() {
        batch = .allocate(byteCount: Self.batchSize, alignment: 16)
        next = Self.batchSize
    }

    deinit { batch.deallocate() }

    /// Writes a fresh nonce into `destination` (which must hold at least 12 bytes).
    public mutating func fill(_ destination: UnsafeMutableRawPointer) throws(CryptoError) {
        if next == Self.batchSize {
            try SecureRandom.fill(batch)
            next = 0
        }
        destination.copyMemory(from: batch.baseAddress! + next, byteCount: Self.nonceSize)
        // Wipe what was handed out so a nonce is never handed out twice.
        (batch.baseAddress! + next).initializeMemory(as: UInt8.self, repeating: 0, count: Self.nonceSize)
        next += Self.nonceSize
    }
}
