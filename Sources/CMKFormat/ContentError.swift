import Glibc
import CMKCrypto

/// A failure reading or writing a file's content. Each case maps to one errno in the FUSE layer.
public enum ContentError: Error, Equatable, CustomStringConvertible {
    /// A system call on the backing file failed.
    case io(call: String, errno: Int32)
    /// The header is missing, tampered or of an unknown version.
    case corruptHeader(String)
    /// Block `index` failed authentication (tampered, swapped, moved or truncated).
    case corruptBlock(index: Int, reason: String)
    /// A crypto failure other than authentication (OpenSSL or RNG).
    case crypto(CryptoError)

    /// The errno an application should see.
    public var errno: Int32 {
        switch self {
        case .io(_, let e): return e
        case .corruptHeader, .corruptBlock, .crypto: return EIO
        }
    }

    public var description: String {
        switch self {
        case .io(let call, let e): return "\(call): \(String(cString: strerror(e)))"
        case .corruptHeader(let why): return "corrupt file header: \(why)"
        case .corruptBlock(let index, let reason): return "block \(index) is corrupt: \(reason)"
        case .crypto(let error): return error.description
        }
    }
}
