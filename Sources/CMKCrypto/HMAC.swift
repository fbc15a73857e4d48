import COpenSSL

/// HMAC-SHA256 over OpenSSL's one-shot `HMAC()`: the audit log's chain MAC.
public enum HMACSHA256 {
    /// The MAC length in bytes.
    public static let size = 32

    /// HMAC-SHA256 of the concatenation of `parts` under `key` (calls `HMAC_CTX` through
    /// `HMAC_Init_ex`/`HMAC_Update`/`HMAC_Final`, so the parts are never copied together).
    public static func mac(key: SecretBytes, _ parts: [UInt8]...) throws(CryptoError) -> [UInt8] {
        guard let ctx = HMAC_CTX_new() else { throw CryptoError.fromQueue("HMAC_CTX_new") }
        defer { HMAC_CTX_free(ctx) }
        let ok = key.withUnsafeBytes { k in HMAC_Init_ex(ctx, k.baseAddress, Int32(k.count), EVP_sha256(), nil) }
        guard ok == 1 else { throw CryptoError.fromQueue("HMAC_Init_ex") }
        for part in parts {
            let rc = part.withUnsafeBufferPointer { HMAC_Update(ctx, $0.baseAddress, $0.count) }
            guard rc == 1 else { throw CryptoError.fromQueue("HMAC_Update") }
        }
        var out = [UInt8](repeating: 0, count: size)
        var length: UInt32 = 0
        guard HMAC_Final(ctx, &out, &length) == 1, length == UInt32(size) else { throw CryptoError.fromQueue("HMAC_Final") }
        return out
    }

    /// Constant-time equality of two MACs.
    public static func equal(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        return a.withUnsafeBufferPointer { x in b.withUnsafeBufferPointer { y in CRYPTO_memcmp(x.baseAddress, y.baseAddress, a.count) == 0 } }
    }
}
