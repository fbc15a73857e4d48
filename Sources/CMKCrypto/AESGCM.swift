import COpenSSL
import Synchronization

/// AES-256-GCM over one reusable OpenSSL `EVP_CIPHER_CTX`.
///
/// Creating a context per block costs an allocation, so a worker keeps one context and re-keys it
/// per request. The cipher is fetched once per process (`Cipher.gcm`) and set on the context only
/// by its first `seal`/`open`; later ones pass no cipher, which OpenSSL 3 takes as "same cipher,
/// new key and nonce": a key schedule, nothing else. (Passing `EVP_aes_256_gcm()` every time made
/// OpenSSL 3 fetch the algorithm again and rebuild the context per call: 4 % of the mount's CPU
/// on a key-miss open, issue 20.) The context keeps the last key's schedule until the next
/// request or `reset()`, which the mount calls whenever keys are dropped. Not thread-safe: each
/// worker owns one.
public final class AESGCM {
    public static let keySize = 32
    public static let nonceSize = 12
    public static let tagSize = 16

    private let ctx: OpaquePointer
    /// Whether `ctx` holds the cipher (set by the first init, dropped by `reset`).
    private var hasCipher = false
    /// Whether `ctx` holds the key of the last `seal(sameKey:…)` (dropped by `reset` and by
    /// every `seal`/`open` that sets a key).
    private var keyKept = false

    public init() {
        guard let ctx = EVP_CIPHER_CTX_new() else { preconditionFailure("EVP_CIPHER_CTX_new: out of memory") }
        self.ctx = ctx
    }

    deinit { EVP_CIPHER_CTX_free(ctx) }

    /// Forgets the last key: OpenSSL wipes the context's key schedule (which holds the key's
    /// bytes) and frees it. The next `seal`/`open` sets the cipher and a key again.
    public func reset() {
        EVP_CIPHER_CTX_reset(ctx)
        hasCipher = false
        keyKept = false
    }

    /// The cipher to pass to an init: the fetched one the first time, nil (keep it) after.
    private func cipherForInit() throws(CryptoError) -> OpaquePointer? {
        if hasCipher { return nil }
        guard let cipher = Cipher.gcm.pointer else { throw .openssl(function: "EVP_CIPHER_fetch(AES-256-GCM)", detail: "not available") }
        return cipher
    }

    /// Encrypts `plaintext` into `ciphertext` (same length) and writes the 16-byte tag to `tag`.
    public func seal(key: UnsafeRawBufferPointer, nonce: UnsafeRawPointer, aad: UnsafeRawBufferPointer,
                     plaintext: UnsafeRawBufferPointer, ciphertext: UnsafeMutableRawPointer,
                     tag: UnsafeMutableRawPointer) throws(CryptoError) {
        guard key.count == Self.keySize else { throw .badLength(what: "AES-256 key", expected: 32, got: key.count) }
        keyKept = false
        guard EVP_EncryptInit_ex(ctx, try cipherForInit(), nil, u8(key.baseAddress), u8(nonce)) == 1 else {
            reset()
            throw CryptoError.fromQueue("EVP_EncryptInit_ex")
        }
        hasCipher = true
        try encrypt(aad: aad, plaintext: plaintext, ciphertext: ciphertext, tag: tag)
    }

    /// `seal` on a context that only ever seals under one key (a pool of that key's own, such as
    /// the audit path key's): the first call schedules the key and later ones keep it, setting
    /// only the nonce (OpenSSL 3 takes an init without a key as "same key, new nonce"), which
    /// saves the key schedule, the GHASH key and a parameter lookup by name per call (a quarter
    /// of an audit path's seal: 0.9 -> 0.7 µs). Every `seal(sameKey:)` on this context must pass the same key; a
    /// `seal`/`open` under any key, or `reset`, makes the next one schedule it again.
    public func seal(sameKey key: UnsafeRawBufferPointer, nonce: UnsafeRawPointer, aad: UnsafeRawBufferPointer,
                     plaintext: UnsafeRawBufferPointer, ciphertext: UnsafeMutableRawPointer,
                     tag: UnsafeMutableRawPointer) throws(CryptoError) {
        guard key.count == Self.keySize else { throw .badLength(what: "AES-256 key", expected: 32, got: key.count) }
        guard EVP_EncryptInit_ex(ctx, try cipherForInit(), nil, keyKept ? nil : u8(key.baseAddress), u8(nonce)) == 1 else {
            reset()
            throw CryptoError.fromQueue("EVP_EncryptInit_ex")
        }
        hasCipher = true
        keyKept = true
        try encrypt(aad: aad, plaintext: plaintext, ciphertext: ciphertext, tag: tag)
    }

    /// The rest of a seal, after the init: the associated data, the plaintext, the tag.
    private func encrypt(aad: UnsafeRawBufferPointer, plaintext: UnsafeRawBufferPointer,
                         ciphertext: UnsafeMutableRawPointer, tag: UnsafeMutableRawPointer) throws(CryptoError) {
        var outLen: Int32 = 0
        if aad.count > 0 {
            guard EVP_EncryptUpdate(ctx, nil, &outLen, u8(aad.baseAddress), Int32(aad.count)) == 1 else {
                throw CryptoError.fromQueue("EVP_EncryptUpdate(aad)")
            }
        }
        if plaintext.count > 0 {
            guard EVP_EncryptUpdate(ctx, ciphertext.assumingMemoryBound(to: UInt8.self), &outLen,
                                    u8(plaintext.baseAddress), Int32(plaintext.count)) == 1 else {
                throw CryptoError.fromQueue("EVP_EncryptUpdate")
            }
        }
        var finalLen: Int32 = 0
        guard EVP_EncryptFinal_ex(ctx, ciphertext.assumingMemoryBound(to: UInt8.self) + Int(outLen), &finalLen) == 1,
              EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, Int32(Self.tagSize), tag) == 1 else {
            throw CryptoError.fromQueue("EVP_EncryptFinal_ex")
        }
    }

    /// Decrypts and verifies; throws `.authenticationFailed` when the tag does not match.
    /// On failure `plaintext` is wiped so no unauthenticated bytes remain in it.
    public func open(key: UnsafeRawBufferPointer, nonce: UnsafeRawPointer, aad: UnsafeRawBufferPointer,
                     ciphertext: UnsafeRawBufferPointer, tag: UnsafeRawPointer,
                     plaintext: UnsafeMutableRawPointer) throws(CryptoError) {
        guard key.count == Self.keySize else { throw .badLength(what: "AES-256 key", expected: 32, got: key.count) }
        keyKept = false
        guard EVP_DecryptInit_ex(ctx, try cipherForInit(), nil, u8(key.baseAddress), u8(nonce)) == 1 else {
            reset()
            throw CryptoError.fromQueue("EVP_DecryptInit_ex")
        }
        hasCipher = true
        var outLen: Int32 = 0
        if aad.count > 0 {
            guard EVP_DecryptUpdate(ctx, nil, &outLen, u8(aad.baseAddress), Int32(aad.count)) == 1 else {
                throw CryptoError.fromQueue("EVP_DecryptUpdate(aad)")
            }
        }
        if ciphertext.count > 0 {
            guard EVP_DecryptUpdate(ctx, plaintext.assumingMemoryBound(to: UInt8.self), &outLen,
                                    u8(ciphertext.baseAddress), Int32(ciphertext.count)) == 1 else {
                throw CryptoError.fromQueue("EVP_DecryptUpdate")
            }
        }
        guard EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, Int32(Self.tagSize), UnsafeMutableRawPointer(mutating: tag)) == 1 else {
            throw CryptoError.fromQueue("EVP_CIPHER_CTX_ctrl(SET_TAG)")
        }
        var finalLen: Int32 = 0
        guard EVP_DecryptFinal_ex(ctx, plaintext.assumingMemoryBound(to: UInt8.self) + Int(outLen), &finalLen) == 1 else {
            ERR_clear_error()
            if ciphertext.count > 0 { plaintext.initializeMemory(as: UInt8.self, repeating: 0, count: ciphertext.count) }
            throw .authenticationFailed
        }
    }

    /// Seals a small record (a wrapped key, an xattr value) as `nonce ‖ ciphertext ‖ tag`.
    /// Sealed straight into the returned array and with `aad` read in place: one allocation per
    /// record (every DEK wrap and every sealed audit path makes one).
    public func sealRecord(key: UnsafeRawBufferPointer, aad: [UInt8], plaintext: UnsafeRawBufferPointer) throws(CryptoError) -> [UInt8] {
        let count = Self.nonceSize + plaintext.count + Self.tagSize
        var failure: CryptoError?
        let out = [UInt8](unsafeUninitializedCapacity: count) { buffer, initialized in
            let base = UnsafeMutableRawPointer(buffer.baseAddress!)
            do throws(CryptoError) {
                try SecureRandom.fill(UnsafeMutableRawBufferPointer(start: base, count: Self.nonceSize))
                try aad.withUnsafeBufferPointer { a throws(CryptoError) in
                    try seal(key: key, nonce: base, aad: UnsafeRawBufferPointer(a), plaintext: plaintext,
                             ciphertext: base + Self.nonceSize, tag: base + Self.nonceSize + plaintext.count)
                }
            } catch {
                failure = error
                buffer.initialize(repeating: 0)
            }
            initialized = count
        }
        if let failure { throw failure }
        return out
    }

    /// Opens a record made by `sealRecord` into a new secret buffer, reading `record` and `aad`
    /// in place.
    public func openRecord(key: UnsafeRawBufferPointer, aad: [UInt8], record: [UInt8]) throws(CryptoError) -> SecretBytes {
        let bodyCount = record.count - Self.nonceSize - Self.tagSize
        guard bodyCount > 0 else {
            throw .badLength(what: "sealed record", expected: Self.nonceSize + Self.tagSize + 1, got: record.count)
        }
        let out = SecretBytes(zeroedCount: bodyCount)
        try record.withUnsafeBufferPointer { r throws(CryptoError) in
            let base = UnsafeRawPointer(r.baseAddress!)
            try aad.withUnsafeBufferPointer { a throws(CryptoError) in
                try out.withUnsafeMutableBytes { p throws(CryptoError) in
                    try open(key: key, nonce: base, aad: UnsafeRawBufferPointer(a),
                             ciphertext: UnsafeRawBufferPointer(start: base + Self.nonceSize, count: bodyCount),
                             tag: base + Self.nonceSize + bodyCount, plaintext: p.baseAddress!)
                }
            }
        }
        return out
    }
}

extension AESGCM {
    /// AES-256-GCM fetched once per process.
    /// Sound as @unchecked Sendable: an EVP_CIPHER from EVP_CIPHER_fetch is immutable and reference
    /// counted; OpenSSL documents fetched algorithms as safe to share between threads. It is never freed.
    struct Cipher: @unchecked Sendable {
        let pointer: OpaquePointer?
        static let gcm = Cipher(pointer: EVP_CIPHER_fetch(nil, "AES-256-GCM", nil))
    }
}

@inline(__always)
private func u8(_ p: UnsafeRawPointer?) -> UnsafePointer<UInt8>? { p?.assumingMemoryBound(to: UInt8.self) }

extension AESGCM {
    /// A few contexts for one key's small records (an audit path, say), shared by the threads
    /// that seal them: a context is built once and re-keyed per call instead of built, keyed
    /// and freed per call. Give each key its own pool: a context keeps its last key's schedule
    /// until its next use or until the pool goes (freeing it cleanses the schedule).
    public final class Pool: Sendable {
        private let idle = Mutex<[Slot]>([])
        /// Contexts kept idle at most; more callers at once each get a context of their own.
        private let limit: Int

        public init(limit: Int = 8) { self.limit = limit }

        /// Runs `body` with a context no other thread is using.
        public func with<R, E: Error>(_ body: (AESGCM) throws(E) -> R) throws(E) -> R {
            let slot = idle.withLock { $0.popLast() } ?? Slot()
            defer { idle.withLock { if $0.count < limit { $0.append(slot) } } }
            return try body(slot.context)
        }

        /// Contexts idle now (tests).
        public var idleCount: Int { idle.withLock { $0.count } }
    }

    /// One context of a pool.
    /// Sound as @unchecked Sendable: the context is used by one thread at a time — taken out of
    /// the pool under its lock, used only by the taker, and put back under the lock.
    final class Slot: @unchecked Sendable {
        let context = AESGCM()
    }
}
