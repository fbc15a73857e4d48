import COpenSSL

/// HMAC-SHA256 over OpenSSL's EVP_MAC: the audit log's chain MAC, key derivations, SigV4.
public enum HMACSHA256 {
    /// The MAC length in bytes.
    public static let size = 32

    /// HMAC-SHA256 of the concatenation of `parts` under `key` (one context fed part by part, so
    /// the parts are never copied together). Callers that MAC many messages under one key keep
    /// a `Keyed` instead.
    public static func mac(key: SecretBytes, _ parts: [UInt8]...) throws(CryptoError) -> [UInt8] {
        let keyed = try Keyed(key: key)
        return try keyed.mac(parts)
    }

    /// Constant-time equality of two MACs.
    public static func equal(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        return a.withUnsafeBufferPointer { x in b.withUnsafeBufferPointer { y in CRYPTO_memcmp(x.baseAddress, y.baseAddress, a.count) == 0 } }
    }
}
