import COpenSSL

extension HMACSHA256 {
    /// One key's HMAC-SHA256 context (OpenSSL's EVP_MAC), reset — not rebuilt — for each
    /// message: the key's pads are hashed once, not per message, which is most of the cost of a
    /// short message (`audit show`/`export` check every record they stream). Not thread-safe:
    /// one owner at a time.
    public final class Keyed {
        /// `EVP_MAC_CTX`, owned: freed (with its copy of the key, cleansed) by deinit.
        private let ctx: OpaquePointer

        public init(key: SecretBytes) throws(CryptoError) {
            guard let algorithm = EVP_MAC_fetch(nil, "HMAC", nil) else { throw CryptoError.fromQueue("EVP_MAC_fetch") }
            // The context holds its own reference to the algorithm.
            defer { EVP_MAC_free(algorithm) }
            guard let ctx = EVP_MAC_CTX_new(algorithm) else { throw CryptoError.fromQueue("EVP_MAC_CTX_new") }
            var digest = Array("SHA256".utf8CString)
            // OSSL_PARAM keeps the pointers it is given: both stay valid across EVP_MAC_init.
            let ok = "digest".withCString { name in
                digest.withUnsafeMutableBufferPointer { d in
                    var params = [OSSL_PARAM_construct_utf8_string(name, d.baseAddress, 0), OSSL_PARAM_construct_end()]
                    return key.withUnsafeBytes { k in
                        EVP_MAC_init(ctx, k.baseAddress?.assumingMemoryBound(to: UInt8.self), k.count, &params)
                    }
                }
            }
            guard ok == 1 else {
                EVP_MAC_CTX_free(ctx)
                throw CryptoError.fromQueue("EVP_MAC_init")
            }
            self.ctx = ctx
        }

        deinit { EVP_MAC_CTX_free(ctx) }

        /// The MAC of `message` into `out` (at least 32 bytes).
        public func mac(_ message: UnsafeRawBufferPointer, into out: UnsafeMutableRawBufferPointer) throws(CryptoError) {
            precondition(out.count >= size)
            // No key: start over under the key given at init.
            guard EVP_MAC_init(ctx, nil, 0, nil) == 1 else { throw CryptoError.fromQueue("EVP_MAC_init") }
            guard EVP_MAC_update(ctx, message.baseAddress?.assumingMemoryBound(to: UInt8.self), message.count) == 1 else {
                throw CryptoError.fromQueue("EVP_MAC_update")
            }
            var length = 0
            guard EVP_MAC_final(ctx, out.baseAddress!.assumingMemoryBound(to: UInt8.self), &length, out.count) == 1,
                  length == size else { throw CryptoError.fromQueue("EVP_MAC_final") }
        }
    }
}
