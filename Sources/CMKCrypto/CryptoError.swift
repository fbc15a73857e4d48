import COpenSSL

/// A failure in the crypto layer. Messages never contain key material.
public enum CryptoError: Error, Equatable, CustomStringConvertible {
    /// Authentication failed: the ciphertext, its tag, its nonce or its associated data was altered.
    case authenticationFailed
    /// OpenSSL reported an error in `function`; `detail` is OpenSSL's own error string.
    case openssl(function: String, detail: String)
    /// The randomness source failed.
    case randomFailed
    /// An input had the wrong size (a programmer error surfaced as data, e.g. a corrupt record).
    case badLength(what: String, expected: Int, got: Int)

    public var description: String {
        switch self {
        case .authenticationFailed: return "authentication failed (data altered or wrong key)"
        case .openssl(let function, let detail): return "OpenSSL \(function) failed: \(detail)"
        case .randomFailed: return "the random number generator failed"
        case .badLength(let what, let expected, let got): return "\(what) has \(got) bytes, expected \(expected)"
        }
    }

    /// Drains OpenSSL's thread-local error queue into one error.
    static func fromQueue(_ function: String) -> CryptoError {
        var detail = ""
        while case let code = ERR_get_error(), code != 0 {
            var buffer = [CChar](repeating: 0, count: 256)
            ERR_error_string_n(code, &buffer, buffer.count)
            if !detail.isEmpty { detail += "; " }
            detail += String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        }
        return .openssl(function: function, detail: detail.isEmpty ? "no detail" : detail)
    }
}
