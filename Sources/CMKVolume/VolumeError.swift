import Glibc
import CMKKeys
import CMKMetadata
import CMKSystem

/// A failure a person must act on, with the exit code the CLI returns and a hint saying how to fix it.
public struct CMKError: Error, CustomStringConvertible {
    /// Documented in docs/exit-codes.md; never reused for another meaning.
    public enum Code: Int32, Sendable {
        case internalError = 1
        case notAVolume = 3
        case unsupportedFormat = 4
        case keyUnavailable = 5
        case mountpoint = 6
        case initTargetNotEmpty = 7
        case alreadyMounted = 8
        case mountFailed = 9
        case io = 10
        case notMounted = 11
        case auditNotIntact = 12
        /// The command refused to do something harmful or impossible (purge of a key still in use).
        case refused = 13
        /// A long operation finished but could not process every item (e.g. EDEKs that did not unwrap).
        case incomplete = 14
        /// `cmkfs fsck` found problems that remain (not repaired, or not repairable).
        case fsckProblems = 15
        /// `cmkfs fsck` could not check some files because the key provider was unavailable
        /// (after retries); nothing was repaired on their account.
        case notChecked = 16
        /// The caller may not read the volume (or its audit log): not the same as no volume.
        case permissionDenied = 17
        case usage = 64
    }

    public let code: Code
    public let message: String
    public let hint: String?
    /// For a master key that cannot be used: why, as a stable word for scripts (`missing`,
    /// `wrong-key`, `disabled`, `destroyed`, `unreachable`); nil for other errors.
    public var reason: String?

    public init(_ code: Code, _ message: String, hint: String? = nil) {
        self.code = code
        self.message = message
        self.hint = hint
    }

    public var description: String { message }

    /// `path` exists but the caller may not read it (EACCES), said as such: before, a non-root
    /// operator was told the volume did not exist or had no audit log.
    public static func permissionDenied(_ path: String) -> CMKError {
        CMKError(.permissionDenied, "permission denied: \(path)", hint: "run as root or as the volume's owner")
    }

    /// Whether looking at `path` fails because the caller may not (rather than because it is not there).
    public static func isDenied(_ path: String) -> Bool {
        let st: stat
        do { st = try Descriptor.cwd.stat(path) } catch { return error.errno == .EACCES }
        // A directory must also be searchable to be read.
        let wanted = (st.st_mode & S_IFMT) == S_IFDIR ? R_OK | X_OK : R_OK
        do { try Descriptor.cwd.access(path, mode: wanted); return false } catch { return error.errno == .EACCES }
    }

    /// Any failure of a step that touches both the metadata database and the key provider.
    static func wrapping(_ error: any Error, volume: String, config: ProviderConfig, doing: String) -> CMKError {
        switch error {
        case let error as MetadataError: return .metadata(error, volume: volume)
        case let error as KeyProviderError: return .provider(error, volume: volume, config: config)
        case let error as CMKError: return error
        default: return CMKError(.internalError, "\(doing): \(error)")
        }
    }

    static func metadata(_ error: MetadataError, volume: String) -> CMKError {
        switch error {
        case .corrupt(let detail):
            return CMKError(.notAVolume, "the metadata database of \(volume) is unusable: \(detail)",
                            hint: "restore VOLUME/meta.db from a backup of the volume")
        case .newerSchema:
            return CMKError(.unsupportedFormat, "\(volume): \(error)", hint: "upgrade cmkfs")
        case .notFound:
            return CMKError(.notAVolume, "\(volume) has no metadata database (meta.db)",
                            hint: "restore VOLUME/meta.db from a backup of the volume")
        case .full:
            return CMKError(.io, "\(volume): \(error)", hint: "free space on the volume's filesystem")
        default:
            return CMKError(.io, "\(volume): \(error)")
        }
    }

    static func provider(_ error: KeyProviderError, volume: String, config: ProviderConfig) -> CMKError {
        let kind = ProviderRegistry.kind(named: config.kind)
        let place = (kind?.place ?? ProviderKind.unknownPlace)(config)
        let hints = (kind?.hints ?? ProviderKind.unknownHints)(config)
        var result: CMKError
        switch error {
        case .keyNotFound:
            result = CMKError(.keyUnavailable, "\(place) has no master key \(config.keyID) for \(volume)",
                              hint: hints.notFound)
            result.reason = "missing"
        case .unwrapFailed:
            result = CMKError(.keyUnavailable, "\(place) holds a different master key \(config.keyID) than the one \(volume) was made with",
                              hint: "restore the original keystore of this volume")
            result.reason = "wrong-key"
        case .keyDisabled:
            result = CMKError(.keyUnavailable, "master key \(config.keyID) of \(volume) is disabled in \(place)",
                              hint: hints.disabled)
            result.reason = "disabled"
        case .keyDestroyed:
            result = CMKError(.keyUnavailable, "master key \(config.keyID) of \(volume) was destroyed; its data cannot be decrypted")
            result.reason = "destroyed"
        case .accessDenied(_, let detail):
            result = CMKError(.keyUnavailable, "\(place) refused access to master key \(config.keyID) of \(volume): \(detail)",
                              hint: hints.denied)
            result.reason = "denied"
        case .unavailable(let why), .corrupt(let why):
            // The socket client's messages already name the KMS ("the KMS at PATH is …").
            result = CMKError(.keyUnavailable, why.hasPrefix(place) ? why : "\(place) is unavailable: \(why)",
                              hint: hints.unavailable)
            result.reason = "unreachable"
        }
        return result
    }
}
