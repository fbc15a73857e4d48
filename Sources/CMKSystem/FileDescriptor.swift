import Glibc

/// An open file descriptor that closes itself: when its owner drops it, or by `close()`. It
/// cannot be copied, so exactly one owner closes it, once. Lend it out as `descriptor` for the
/// calls; hand it to C or to a table that closes it itself with `release()`.
///
/// Keep it in a named binding for as long as its descriptor is used: a temporary
/// (`FileDescriptor(adopting: fd).descriptor.fsync()`) is closed as soon as `descriptor` has been
/// read, before the call runs.
///
/// Costs nothing at run time over a bare `Int32`: it is the `Int32`, and its deinit is the
/// close the owner would have written.
public struct FileDescriptor: ~Copyable, Sendable {
    public let rawValue: Int32

    /// Takes ownership of `rawValue`, an open descriptor.
    @inlinable
    public init(adopting rawValue: Int32) { self.rawValue = rawValue }

    /// The descriptor, for the calls on it; valid while this value lives.
    @inlinable
    public var descriptor: Descriptor { Descriptor(rawValue: rawValue) }

    /// open(2): `path` relative to the working directory (give O_CLOEXEC in `flags`).
    public static func open(_ path: String, _ flags: Int32, mode: mode_t = 0) throws(SystemError) -> FileDescriptor {
        try Descriptor.cwd.openat(path, flags, mode: mode)
    }

    /// Closes the descriptor; an error (EIO from a delayed write-back on NFS, say) is thrown.
    /// Never retried (`Retry`).
    public consuming func close() throws(SystemError) {
        let fd = rawValue
        discard self
        if Glibc.close(fd) != 0 && Glibc.errno != Glibc.EINTR { throw SystemError("close", errno: .current) }
    }

    /// Gives up ownership: the caller closes the returned descriptor.
    public consuming func release() -> Int32 {
        let fd = rawValue
        discard self
        return fd
    }

    deinit { _ = Glibc.close(rawValue) }
}
