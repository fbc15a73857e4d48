import COpenSSL

/// Key material: a fixed-size buffer that is wiped with `OPENSSL_cleanse` when released, on
/// pages excluded from core dumps (`SecretMemory`).
///
/// The bytes are reachable only inside `withUnsafeBytes`; `description` is redacted, and equality
/// is constant-time. A final class rather than a `~Copyable` struct because one unwrapped DEK is
/// shared by every handle of an open file and must be wiped exactly once, when the last user lets
/// go; a class gives that without ever duplicating the bytes.
public final class SecretBytes: @unchecked Sendable, CustomStringConvertible {
    // Sound because `storage` is written only before `init` returns (or through
    // `withUnsafeMutableBytes` by the sole owner while building the secret) and freed in `deinit`,
    // when no other reference can exist.
    private let storage: UnsafeMutableRawBufferPointer

    /// The number of secret bytes.
    public var count: Int { storage.count }

    /// A secret of `count` zero bytes, to be filled by the caller through `withUnsafeMutableBytes`.
    public init(zeroedCount count: Int) {
        precondition(count > 0, "a secret has at least one byte")
        storage = SecretMemory.allocate(count)
        storage.initializeMemory(as: UInt8.self, repeating: 0)
    }

    /// A fresh secret of `count` bytes from OpenSSL's CSPRNG.
    public static func random(count: Int) throws(CryptoError) -> SecretBytes {
        let secret = SecretBytes(zeroedCount: count)
        try secret.withUnsafeMutableBytes { buffer throws(CryptoError) in
            try SecureRandom.fill(buffer)
        }
        return secret
    }

    /// A secret copied from `bytes`; the caller remains responsible for wiping its own copy.
    public convenience init(copying bytes: UnsafeRawBufferPointer) {
        self.init(zeroedCount: bytes.count)
        storage.copyMemory(from: bytes)
    }

    deinit {
        OPENSSL_cleanse(storage.baseAddress, storage.count)
        SecretMemory.deallocate(storage)
    }

    /// Calls `body` with a read-only view of the secret; the pointer must not escape.
    public func withUnsafeBytes<R, E: Error>(_ body: (UnsafeRawBufferPointer) throws(E) -> R) throws(E) -> R {
        try body(UnsafeRawBufferPointer(storage))
    }

    /// Calls `body` with a writable view; only for the owner that is still building the secret.
    public func withUnsafeMutableBytes<R, E: Error>(_ body: (UnsafeMutableRawBufferPointer) throws(E) -> R) throws(E) -> R {
        try body(storage)
    }

    /// Constant-time comparison.
    public func constantTimeEquals(_ other: SecretBytes) -> Bool {
        guard count == other.count else { return false }
        return other.withUnsafeBytes { o in CRYPTO_memcmp(storage.baseAddress, o.baseAddress, count) == 0 }
    }

    public var description: String { "SecretBytes(\(count) bytes, redacted)" }
}

/// Wipes a plain buffer that briefly held secret bytes (a read buffer, a decrypted record).
public func secureZero(_ buffer: UnsafeMutableRawBufferPointer) {
    guard let base = buffer.baseAddress, buffer.count > 0 else { return }
    OPENSSL_cleanse(base, buffer.count)
}
