/// Why a provider refused or failed. Messages name the key and the place, never key material.
public enum KeyProviderError: Error, Equatable, CustomStringConvertible {
    /// The provider has no such key or version.
    case keyNotFound(KeyRef, detail: String)
    /// The key exists but is disabled.
    case keyDisabled(KeyRef)
    /// The key was destroyed.
    case keyDestroyed(KeyRef)
    /// The provider refused the caller rather than the key: its token or credentials are
    /// invalid, expired or revoked, or their permission on the key was withdrawn. The key's
    /// owner can do this as surely as disabling the key, so it counts as the kill switch too;
    /// `detail` says what the provider answered (never the token).
    case accessDenied(KeyRef, detail: String)
    /// The EDEK did not unwrap: tampered, bound to another file or volume, or another key.
    case unwrapFailed(KeyRef)
    /// The provider could not be reached or answered with an error.
    case unavailable(String)
    /// The provider's own storage is damaged.
    case corrupt(String)

    public var description: String {
        switch self {
        case .keyNotFound(let key, let detail): return "master key \(key) not found: \(detail)"
        case .keyDisabled(let key): return "master key \(key) is disabled"
        case .keyDestroyed(let key): return "master key \(key) was destroyed"
        case .accessDenied(let key, let detail): return "access to master key \(key) was refused: \(detail)"
        case .unwrapFailed(let key): return "data key did not unwrap under master key \(key) (tampered, moved, or another key)"
        case .unavailable(let why): return "key provider unavailable: \(why)"
        case .corrupt(let why): return "key provider storage is corrupt: \(why)"
        }
    }
}
