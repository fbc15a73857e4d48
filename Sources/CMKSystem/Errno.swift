import Glibc

/// An errno value. Kept as the kernel's number, so the errno an application finally sees is
/// the one the backing filesystem gave (the FUSE edge passes it through unchanged).
public struct Errno: RawRepresentable, Error, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: Int32

    @inlinable
    public init(rawValue: Int32) { self.rawValue = rawValue }

    /// The calling thread's errno, read right after a failed call.
    @inlinable
    public static var current: Errno { Errno(rawValue: Glibc.errno) }

    /// strerror(3)'s text.
    public var description: String { String(cString: strerror(rawValue)) }

    public static let EPERM = Errno(rawValue: Glibc.EPERM)
    public static let ENOENT = Errno(rawValue: Glibc.ENOENT)
    public static let EINTR = Errno(rawValue: Glibc.EINTR)
    public static let EIO = Errno(rawValue: Glibc.EIO)
    public static let EBADF = Errno(rawValue: Glibc.EBADF)
    public static let EAGAIN = Errno(rawValue: Glibc.EAGAIN)
    public static let ENOMEM = Errno(rawValue: Glibc.ENOMEM)
    public static let EACCES = Errno(rawValue: Glibc.EACCES)
    public static let EEXIST = Errno(rawValue: Glibc.EEXIST)
    public static let EXDEV = Errno(rawValue: Glibc.EXDEV)
    public static let ENOTDIR = Errno(rawValue: Glibc.ENOTDIR)
    public static let EISDIR = Errno(rawValue: Glibc.EISDIR)
    public static let EINVAL = Errno(rawValue: Glibc.EINVAL)
    public static let ENOSPC = Errno(rawValue: Glibc.ENOSPC)
    public static let ERANGE = Errno(rawValue: Glibc.ERANGE)
    public static let ENOSYS = Errno(rawValue: Glibc.ENOSYS)
    public static let ENOTEMPTY = Errno(rawValue: Glibc.ENOTEMPTY)
    public static let ELOOP = Errno(rawValue: Glibc.ELOOP)
    public static let ENODATA = Errno(rawValue: Glibc.ENODATA)
    public static let EOPNOTSUPP = Errno(rawValue: Glibc.EOPNOTSUPP)
    public static let EDQUOT = Errno(rawValue: Glibc.EDQUOT)
    public static let ENOTTY = Errno(rawValue: Glibc.ENOTTY)
}

/// A failed system call: its errno, the call's name and, where it took one, the path, so a
/// message can say which call failed on which file ("openat .cmkfs-dirid: No such file or
/// directory"). Modules above turn it into their own error, keeping `errno`.
public struct SystemError: Error, Hashable, Sendable, CustomStringConvertible {
    public let errno: Errno
    /// The system call, as its man page names it.
    public let call: String
    /// The path the call was given, relative to its directory descriptor; nil for calls on a
    /// descriptor alone.
    public let path: String?

    @inlinable
    public init(_ call: String, errno: Errno, path: String? = nil) {
        self.call = call
        self.errno = errno
        self.path = path
    }

    public var description: String {
        if let path { return "\(call) \(path): \(errno)" }
        return "\(call): \(errno)"
    }
}
