import Glibc
import CMKAudit
import CMKCrypto
import CMKFormat
import CMKKeyService
import CMKKeys
import CMKMetadata
import CMKSystem
import CMKVolume

/// Why a filesystem operation failed: a lower layer's own error, kept whole, or an answer the
/// FUSE layer itself gives by POSIX rules. Every failure the mount answers goes through `errno`
/// below: the one table that decides what applications see (docs/design-notes.md, "Errors").
enum FSError: Error, CustomStringConvertible {
    /// An errno a system call on the backing tree returned, or one POSIX prescribes for the
    /// request itself (EISDIR, EBADF, EEXIST…): passed on unchanged.
    case posix(Int32)
    /// A system call on the backing tree failed: its errno, with the call and the path for the log.
    case system(SystemError)
    /// Reading or writing a file's content failed.
    case content(ContentError)
    /// A name or symlink target could not be encrypted or decrypted.
    case name(NameError)
    /// A file's data key (or the name key) could not be had, made or changed.
    case fileKey(FileKeyError)
    /// The key cache refused an open file's lease (revoked or expired).
    case refused(KeyRefusal)
    /// The audit record of a key use could not be written: the use is refused (fail closed).
    case audit(AuditError)
    /// The mount's own metadata rows (long names, name bindings, durability) failed.
    case metadata(MetadataError)
    /// A user extended attribute's row failed.
    case xattr(MetadataError)
    /// A crypto operation of the mount's own failed (sealing an xattr value).
    case crypto(CryptoError)
    /// The backing tree or the database holds what the mount did not write: a directory
    /// without its id, a symlink target that does not decrypt, a file not bound to its name.
    case corrupt(String)

    var description: String {
        switch self {
        case .posix(let code): return Errno(rawValue: code).description
        case .system(let error): return error.description
        case .content(let error): return error.description
        case .name(let error): return error.description
        case .fileKey(let error): return error.description
        case .refused(.revoked): return "the data key was revoked (master key disabled or cache flushed)"
        case .refused(.expired): return "the data key's lease ran out: the key provider has not vouched for it within the maximum lifetime"
        case .audit(let error): return error.description
        case .metadata(let error), .xattr(let error): return error.description
        case .crypto(let error): return error.description
        case .corrupt(let why): return why
        }
    }
}

/// Runs system calls, reporting their failure as a `FSError` that keeps the call and the path.
func system<R: ~Copyable>(_ body: () throws(SystemError) -> R) throws(FSError) -> R {
    do { return try body() } catch { throw .system(error) }
}

extension FSError {
    /// The errno the application sees. The only place the mount decides one: a new case in any
    /// lower layer's error fails to compile here until someone decides its errno
    /// (Tests/CMKFuseTests/ErrnoMappingTests.swift pins every row).
    var errno: Int32 {
        switch self {
        case .posix(let code):
            // The kernel's or POSIX's own answer: nothing to translate.
            return code
        case .system(let error):
            // The backing filesystem's own answer, unchanged, as for `.posix`.
            return error.errno.rawValue
        case .content(let error):
            return Self.errno(error)
        case .name(let error):
            return Self.errno(error)
        case .fileKey(let error):
            return Self.errno(error.cause)
        case .refused(.revoked):
            // The operator revoked or flushed the key: a permission the key's owner took back.
            return EACCES
        case .refused(.expired):
            // Nobody took the key away, the provider just could not vouch for it in time: an
            // I/O failure to retry, not a refusal.
            return EIO
        case .audit(let error):
            switch error.kind {
            case .full:
                // The audit disk is full: the use is refused until space is freed, and ENOSPC
                // tells the application (and its operator) which resource ran out.
                return ENOSPC
            case .io, .busy, .key, .malformed:
                // The record could not be written for any other reason: fail closed with EIO.
                return EIO
            }
        case .metadata:
            // The mount's own rows (long names, bindings, fsync's durability) are bookkeeping
            // the application never asked for: any failure is an I/O error, even a full disk.
            return EIO
        case .xattr(let error):
            switch error {
            case .exists:
                // XATTR_CREATE on a name that exists (setxattr(2)).
                return EEXIST
            case .notFound:
                // XATTR_REPLACE or removexattr on a name that does not exist (setxattr(2)).
                return ENODATA
            case .full:
                // The value needs room the database's disk does not have.
                return ENOSPC
            case .corrupt, .newerSchema, .io, .busy:
                return EIO
            }
        case .crypto:
            // OpenSSL or the randomness source failed: nothing the caller can change.
            return EIO
        case .corrupt:
            // Tampering or damage behind the mount's back: the data cannot be trusted.
            return EIO
        }
    }

    /// A content failure: a system call's own errno; anything that failed authentication or
    /// crypto is EIO (the bytes on disk are not what cmkfs wrote).
    static func errno(_ error: ContentError) -> Int32 {
        switch error {
        case .io(_, let code): return code
        case .corruptHeader, .corruptBlock, .crypto: return EIO
        }
    }

    /// A name failure: too long is the caller's (ENAMETOOLONG), not a name is EINVAL, a name on
    /// disk that does not authenticate or a crypto failure is EIO.
    static func errno(_ error: NameError) -> Int32 {
        switch error {
        case .tooLong: return ENAMETOOLONG
        case .malformed: return EINVAL
        case .authenticationFailed, .crypto: return EIO
        }
    }

    /// A key failure, by its cause.
    static func errno(_ cause: FileKeyError.Cause) -> Int32 {
        switch cause {
        case .provider(.keyDisabled), .provider(.keyDestroyed), .provider(.accessDenied):
            // The customer turned the master key off, or withdrew this host's access to it:
            // the point of a customer-managed key.
            return EACCES
        case .provider(.keyNotFound):
            // The key a mounted volume's EDEK names is gone from its provider: the customer
            // deleted it (AWS NotFoundException after the deletion window, a deleted transit
            // key). The lease renewal already flushes on this answer; a fresh open agrees.
            return EACCES
        case .provider(.unwrapFailed), .provider(.unavailable), .provider(.corrupt):
            // The provider failed or the EDEK is damaged: no one refused, the read cannot happen.
            return EIO
        case .metadata(.full):
            // A new key row needs room the disk does not have.
            return ENOSPC
        case .metadata(.notFound), .metadata(.exists), .metadata(.corrupt), .metadata(.newerSchema), .metadata(.io), .metadata(.busy):
            return EIO
        case .content(let error):
            return errno(error)
        case .system(let code):
            return code
        case .keyDropped:
            // The kill switch stopped a rekey: the same answer as any use of a revoked key.
            return EACCES
        case .crypto, .missingRow, .corrupt, .unexpected:
            return EIO
        }
    }
}
