import Glibc
import CMKSystem

/// A failure of the audit log, with the errno of the system call that failed (its cause) and a
/// hint for a person. What a FUSE operation answers when its record cannot be written (fail
/// closed) is decided at the FUSE edge (`Sources/CMKFuse/Errno+Mapping.swift`).
public struct AuditError: Error, CustomStringConvertible, Sendable {
    public enum Kind: Sendable, Equatable {
        /// The disk is full (ENOSPC, EDQUOT): nothing may use a key until space is freed.
        case full
        /// A system call failed.
        case io
        /// Another process writes this log (`writer.lock` is held).
        case busy
        /// The audit key could not be had or used.
        case key
        /// A record or checkpoint is not in the documented format.
        case malformed
    }

    public let kind: Kind
    public let message: String
    public let hint: String?
    /// The errno of the failed system call, if one failed.
    public let errno: Int32?

    public init(_ kind: Kind, _ message: String, hint: String? = nil, errno: Int32? = nil) {
        self.kind = kind
        self.message = message
        self.hint = hint
        self.errno = errno
    }

    /// A failed system call `call` on `path`, classified by its errno.
    static func system(_ call: String, _ path: String, _ code: Int32) -> AuditError {
        let text = "\(call) \(path): \(String(cString: strerror(code)))"
        if code == ENOSPC || code == EDQUOT {
            return AuditError(.full, "the audit log cannot be written: \(text)",
                              hint: "free space on the filesystem of the volume's audit/ directory; no key is used until then", errno: code)
        }
        return AuditError(.io, "the audit log cannot be written: \(text)", errno: code)
    }

    /// A failed system call, classified by its errno.
    static func system(_ error: SystemError) -> AuditError { system(error.call, error.path ?? "", error.errno.rawValue) }

    public var description: String { message }
}
