import Glibc
import CMKCrypto

/// A failure reading or writing a file's content. Which errno an application sees is decided
/// by the FUSE layer alone (`Sources/CMKFuse/Errno+Mapping.swift`).
public enum ContentError: Error, Equatable, CustomStringConvertible {
    /// A system call on the backing file failed.
    case io(call: String, errno: Int32)
    /// The header is missing, tampered or of an unknown version.
    case corruptHeader(String)
    /// Block `index` failed authentication (tampered, swapped, moved or truncated).
    case corruptBlock(index: Int, reason: String)
    /// A crypto failure other than authentication (OpenSSL or RNG).
    case crypto(CryptoError)

    public var description: String {
        switch self {
        case .io(let call, let e): return "\(call): \(String(cString: strerror(e)))"
        case .corruptHeader(let why): return "corrupt file header: \(why)"
        case .corruptBlock(let index, let reason): return "block \(index) is corrupt: \(reason)"
        case .crypto(let error): return error.description
        }
    }
}
