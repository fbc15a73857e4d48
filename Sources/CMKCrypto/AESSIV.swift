import COpenSSL
import Synchronization

/// AES-256-SIV (RFC 5297, with two AES-256 keys: a 64-byte key) through OpenSSL 3's EVP
/// interface: deterministic authenticated encryption, the primitive for encrypted file names.
///
/// SIV is misuse resistant: with no nonce, equal (associated data, plaintext) pairs give equal
/// ciphertexts and nothing else leaks; a fresh random nonce passed as one more associated-data
/// component makes it randomized. The output is `tag (16) ‖ ciphertext` (same length as the
/// plaintext); the tag is the synthetic IV.
///
/// Each call uses its own cipher context (SIV contexts cannot be rewound after finishing), so the
/// functions are safe to call from any thread.
public enum AESSIV {
    /// 64 bytes: the CMAC key and the CTR key, 256 bits each.
    public static let keySize = 64
    /// The synthetic IV that leads every sealed value.
    public static let tagSize = 16

    /// Seals `plaintext` under `key`, authenticating each component of `associatedData` (S2V
    /// takes a vector of strings, so components need no length framing of their own).
    public static func seal(key: SecretBytes, associatedData: [[UInt8]], plaintext: [UInt8]) throws(CryptoError) -> [UInt8] {
        try seal(context: context(key: key, encrypt: true), associatedData: associatedData, plaintext: plaintext)
    }

    /// `seal` under a key whose schedule was set up once (`AESSIVKey`).
    public static func seal(key: AESSIVKey, associatedData: [[UInt8]], plaintext: [UInt8]) throws(CryptoError) -> [UInt8] {
        try seal(context: key.context(encrypt: true), associatedData: associatedData, plaintext: plaintext)
    }

    /// `open` under a key whose schedule was set up once (`AESSIVKey`).
    public static func open(key: AESSIVKey, associatedData: [[UInt8]], sealed: [UInt8]) throws(CryptoError) -> [UInt8] {
        guard sealed.count >= tagSize else { throw .badLength(what: "AES-SIV sealed value", expected: tagSize, got: sealed.count) }
        return try open(context: key.context(encrypt: false), associatedData: associatedData, sealed: sealed)
    }

    /// Seals with `ctx` (keyed for encryption; consumed).
    private static func seal(context ctx: OpaquePointer, associatedData: [[UInt8]], plaintext: [UInt8]) throws(CryptoError) -> [UInt8] {
        defer { EVP_CIPHER_CTX_free(ctx) }
        try authenticate(ctx, associatedData, encrypt: true)
        var out = [UInt8](repeating: 0, count: tagSize + plaintext.count)
        var outLen: Int32 = 0
        let updated = out.withUnsafeMutableBufferPointer { o in
            plaintext.withUnsafeBufferPointer { p in
                // SIV wants the whole message in one update; OpenSSL refuses an empty pointer.
                EVP_EncryptUpdate(ctx, o.baseAddress! + tagSize, &outLen, p.baseAddress ?? emptyInput, Int32(plaintext.count))
            }
        }
        guard updated == 1 else { throw CryptoError.fromQueue("EVP_EncryptUpdate(AES-256-SIV)") }
        var finalLen: Int32 = 0
        let finished = out.withUnsafeMutableBufferPointer { o in
            EVP_EncryptFinal_ex(ctx, o.baseAddress! + tagSize + Int(outLen), &finalLen) == 1
                && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, Int32(tagSize), o.baseAddress) == 1
        }
        guard finished else { throw CryptoError.fromQueue("EVP_EncryptFinal_ex(AES-256-SIV)") }
        return out
    }

    /// Opens a value made by `seal` with the same key and associated data; throws
    /// `.authenticationFailed` when anything was changed (no unauthenticated byte is returned).
    public static func open(key: SecretBytes, associatedData: [[UInt8]], sealed: [UInt8]) throws(CryptoError) -> [UInt8] {
        guard sealed.count >= tagSize else { throw .badLength(what: "AES-SIV sealed value", expected: tagSize, got: sealed.count) }
        return try open(context: context(key: key, encrypt: false), associatedData: associatedData, sealed: sealed)
    }

    /// Opens with `ctx` (keyed for decryption; consumed).
    private static func open(context ctx: OpaquePointer, associatedData: [[UInt8]], sealed: [UInt8]) throws(CryptoError) -> [UInt8] {
        defer { EVP_CIPHER_CTX_free(ctx) }
        // SIV checks the tag at the end of the single update, so it is set first.
        let tagSet = sealed.withUnsafeBufferPointer { s in
            EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, Int32(tagSize), UnsafeMutableRawPointer(mutating: s.baseAddress!)) == 1
        }
        guard tagSet else { throw CryptoError.fromQueue("EVP_CIPHER_CTX_ctrl(SET_TAG)") }
        try authenticate(ctx, associatedData, encrypt: false)
        let bodyCount = sealed.count - tagSize
        var out = [UInt8](repeating: 0, count: max(bodyCount, 1))
        var outLen: Int32 = 0
        let updated = out.withUnsafeMutableBufferPointer { o in
            sealed.withUnsafeBufferPointer { s in
                EVP_DecryptUpdate(ctx, o.baseAddress!, &outLen, s.baseAddress! + tagSize, Int32(bodyCount))
            }
        }
        var finalLen: Int32 = 0
        let finished = updated == 1 && out.withUnsafeMutableBufferPointer { o in
            EVP_DecryptFinal_ex(ctx, o.baseAddress! + Int(outLen), &finalLen) == 1
        }
        guard finished else {
            ERR_clear_error()
            out.withUnsafeMutableBytes { secureZero($0) }
            throw .authenticationFailed
        }
        // `out` has one spare byte only for an empty body (OpenSSL wants a buffer).
        return bodyCount == 0 ? [] : out
    }

    static func context(key: SecretBytes, encrypt: Bool) throws(CryptoError) -> OpaquePointer {
        guard key.count == keySize else { throw .badLength(what: "AES-256-SIV key", expected: keySize, got: key.count) }
        guard let cipher = Cipher.siv.pointer else { throw .openssl(function: "EVP_CIPHER_fetch(AES-256-SIV)", detail: "not available") }
        guard let ctx = EVP_CIPHER_CTX_new() else { throw CryptoError.fromQueue("EVP_CIPHER_CTX_new") }
        let ok = key.withUnsafeBytes { k in
            encrypt ? EVP_EncryptInit_ex2(ctx, cipher, k.baseAddress?.assumingMemoryBound(to: UInt8.self), nil, nil)
                    : EVP_DecryptInit_ex2(ctx, cipher, k.baseAddress?.assumingMemoryBound(to: UInt8.self), nil, nil)
        }
        guard ok == 1 else {
            EVP_CIPHER_CTX_free(ctx)
            throw CryptoError.fromQueue("EVP_CipherInit_ex2(AES-256-SIV)")
        }
        return ctx
    }

    /// One S2V component per element (an update with a nil output buffer is associated data).
    private static func authenticate(_ ctx: OpaquePointer, _ components: [[UInt8]], encrypt: Bool) throws(CryptoError) {
        for component in components {
            var n: Int32 = 0
            let rc = component.withUnsafeBufferPointer { c in
                encrypt ? EVP_EncryptUpdate(ctx, nil, &n, c.baseAddress ?? emptyInput, Int32(c.count))
                        : EVP_DecryptUpdate(ctx, nil, &n, c.baseAddress ?? emptyInput, Int32(c.count))
            }
            guard rc == 1 else { throw CryptoError.fromQueue("EVP_CipherUpdate(AES-256-SIV, aad)") }
        }
    }

    /// The fetched cipher, once per process.
    /// Sound as @unchecked Sendable: an EVP_CIPHER from EVP_CIPHER_fetch is immutable and reference
    /// counted; OpenSSL documents fetched algorithms as safe to share between threads. It is never freed.
    struct Cipher: @unchecked Sendable {
        let pointer: OpaquePointer?
        static let siv = Cipher(pointer: EVP_CIPHER_fetch(nil, "AES-256-SIV", nil))
    }
}

/// A valid pointer for zero-length inputs (OpenSSL rejects a NULL input even of length 0).
/// Sound as nonisolated(unsafe): written once by its initializer, then only passed to OpenSSL
/// with a length of 0, so no byte of it is ever read or written again.
nonisolated(unsafe) private let emptyInput: UnsafePointer<UInt8> = {
    let p = UnsafeMutablePointer<UInt8>.allocate(capacity: 1)
    p.initialize(to: 0)
    return UnsafePointer(p)
}()

/// SHA-256 through `EVP_Digest`: content-addressed names for long encrypted file names.
/// An AES-256-SIV key with its OpenSSL contexts keyed once.
///
/// Keying a SIV context is most of the cost of sealing a file name: OpenSSL sets up a CMAC and a
/// CTR context and their AES schedules (about half of a lookup's crypto time in a profile of a
/// tree read). Each call here copies a keyed template instead (`EVP_CIPHER_CTX_copy`), which
/// duplicates the schedules without recomputing them.
///
/// Sound as @unchecked Sendable: the two templates are written only by `init` and `deinit`; every
/// other use is `EVP_CIPHER_CTX_copy` reading one under `lock`, so no two threads touch a template
/// at once. The copies belong to their callers.
public final class AESSIVKey: @unchecked Sendable {
    private let encryptTemplate: OpaquePointer
    private let decryptTemplate: OpaquePointer
    private let lock = Mutex(())

    /// Keys both templates with `key` (64 bytes); OpenSSL keeps the schedule, the caller keeps `key`.
    public init(_ key: SecretBytes) throws(CryptoError) {
        let encrypt = try AESSIV.context(key: key, encrypt: true)
        do { decryptTemplate = try AESSIV.context(key: key, encrypt: false) } catch {
            EVP_CIPHER_CTX_free(encrypt)
            throw error
        }
        encryptTemplate = encrypt
    }

    deinit {
        // EVP_CIPHER_CTX_free cleanses the key schedules.
        EVP_CIPHER_CTX_free(encryptTemplate)
        EVP_CIPHER_CTX_free(decryptTemplate)
    }

    /// A fresh context keyed for encryption or decryption; the caller frees it.
    func context(encrypt: Bool) throws(CryptoError) -> OpaquePointer {
        guard let ctx = EVP_CIPHER_CTX_new() else { throw CryptoError.fromQueue("EVP_CIPHER_CTX_new") }
        let copied = lock.withLock { _ in EVP_CIPHER_CTX_copy(ctx, encrypt ? encryptTemplate : decryptTemplate) }
        guard copied == 1 else {
            EVP_CIPHER_CTX_free(ctx)
            throw CryptoError.fromQueue("EVP_CIPHER_CTX_copy(AES-256-SIV)")
        }
        return ctx
    }
}

public enum SHA256 {
    public static let size = 32

    public static func hash(_ bytes: [UInt8]) throws(CryptoError) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: size)
        var length: UInt32 = 0
        let rc = bytes.withUnsafeBufferPointer { b in
            EVP_Digest(b.baseAddress ?? emptyInput, b.count, &out, &length, EVP_sha256(), nil)
        }
        guard rc == 1, length == UInt32(size) else { throw CryptoError.fromQueue("EVP_Digest(SHA-256)") }
        return out
    }
}
