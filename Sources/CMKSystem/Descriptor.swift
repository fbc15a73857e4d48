import Glibc
import CLinux

/// A file descriptor as a value that does not own it: the calls on an open file. It is what a
/// `FileDescriptor` lends (`file.descriptor`), and what the FUSE layer keeps in tables whose
/// entries are closed by their owner. Every call follows the EINTR rule in `Retry` and throws
/// a `SystemError` naming the call.
///
/// The methods are `@inlinable`: a read or write per FUSE request costs the system call and
/// nothing else (bench/syscall-overhead measures it).
public struct Descriptor: RawRepresentable, Hashable, Sendable {
    public let rawValue: Int32

    @inlinable
    public init(rawValue: Int32) { self.rawValue = rawValue }

    /// AT_FDCWD: the `*at` calls on it resolve paths as the plain calls do.
    public static let cwd = Descriptor(rawValue: AT_FDCWD)

    // MARK: Reads and writes

    /// One read(2) into `buffer`; the count read, 0 at end of file.
    @inlinable
    public func read(into buffer: UnsafeMutableRawBufferPointer) throws(SystemError) -> Int {
        try Retry.check("read") { Glibc.read(rawValue, buffer.baseAddress, buffer.count) }
    }

    /// One write(2) of `buffer`; the count written.
    @inlinable
    public func write(_ buffer: UnsafeRawBufferPointer) throws(SystemError) -> Int {
        try Retry.check("write") { Glibc.write(rawValue, buffer.baseAddress, buffer.count) }
    }

    /// write(2) until all of `buffer` is written.
    @inlinable
    public func writeAll(_ buffer: UnsafeRawBufferPointer) throws(SystemError) {
        var done = 0
        while done < buffer.count {
            done += try Retry.check("write") { Glibc.write(rawValue, buffer.baseAddress! + done, buffer.count - done) }
        }
    }

    /// One pread(2) of up to `buffer.count` bytes at `offset`.
    @inlinable
    public func pread(into buffer: UnsafeMutableRawBufferPointer, at offset: Int) throws(SystemError) -> Int {
        try Retry.check("pread") { Glibc.pread(rawValue, buffer.baseAddress, buffer.count, off_t(offset)) }
    }

    /// pread(2) until `buffer` is full or the file ends; the count read.
    @inlinable
    public func preadFully(into buffer: UnsafeMutableRawBufferPointer, at offset: Int) throws(SystemError) -> Int {
        var done = 0
        while done < buffer.count {
            let n = try Retry.check("pread") { Glibc.pread(rawValue, buffer.baseAddress! + done, buffer.count - done, off_t(offset + done)) }
            if n == 0 { break }
            done += n
        }
        return done
    }

    /// One pwrite(2) of `buffer` at `offset`; the count written.
    @inlinable
    public func pwrite(_ buffer: UnsafeRawBufferPointer, at offset: Int) throws(SystemError) -> Int {
        try Retry.check("pwrite") { Glibc.pwrite(rawValue, buffer.baseAddress, buffer.count, off_t(offset)) }
    }

    /// pwrite(2) until all of `buffer` is written at `offset`.
    @inlinable
    public func pwriteAll(_ buffer: UnsafeRawBufferPointer, at offset: Int) throws(SystemError) {
        var done = 0
        while done < buffer.count {
            done += try Retry.check("pwrite") { Glibc.pwrite(rawValue, buffer.baseAddress! + done, buffer.count - done, off_t(offset + done)) }
        }
    }

    /// lseek(2); the new offset.
    @discardableResult
    public func seek(to offset: Int, whence: Int32 = SEEK_SET) throws(SystemError) -> Int {
        Int(try Retry.check("lseek") { Glibc.lseek(rawValue, off_t(offset), whence) })
    }

    // MARK: The file

    public func fsync() throws(SystemError) {
        _ = try Retry.check("fsync") { Glibc.fsync(rawValue) }
    }

    public func fdatasync() throws(SystemError) {
        _ = try Retry.check("fdatasync") { Glibc.fdatasync(rawValue) }
    }

    public func ftruncate(_ size: Int) throws(SystemError) {
        _ = try Retry.check("ftruncate") { Glibc.ftruncate(rawValue, off_t(size)) }
    }

    public func fstat() throws(SystemError) -> Glibc.stat {
        var st = Glibc.stat()
        _ = try Retry.check("fstat") { Glibc.fstat(rawValue, &st) }
        return st
    }

    /// fallocate(2) with `mode` (0, `Descriptor.keepSize`, `Descriptor.punchHole | keepSize`).
    public func fallocate(mode: Int32, offset: Int, length: Int) throws(SystemError) {
        _ = try Retry.check("fallocate") { cmkfs_fallocate(rawValue, mode, off_t(offset), off_t(length)) }
    }

    /// FALLOC_FL_KEEP_SIZE and FALLOC_FL_PUNCH_HOLE from <linux/falloc.h>.
    public static let keepSize = CMKFS_FALLOC_FL_KEEP_SIZE
    public static let punchHole = CMKFS_FALLOC_FL_PUNCH_HOLE

    public func fchmod(_ mode: mode_t) throws(SystemError) {
        _ = try Retry.check("fchmod") { Glibc.fchmod(rawValue, mode) }
    }

    public func fchown(_ uid: uid_t, _ gid: gid_t) throws(SystemError) {
        _ = try Retry.check("fchown") { Glibc.fchown(rawValue, uid, gid) }
    }

    /// The open file description's status flags (fcntl F_GETFL).
    public func statusFlags() throws(SystemError) -> Int32 {
        try Retry.check("fcntl") { cmkfs_fcntl_int(rawValue, F_GETFL, 0) }
    }

    /// Sets the status flags (fcntl F_SETFL): O_APPEND, O_NONBLOCK, O_NOATIME, ….
    public func setStatusFlags(_ flags: Int32) throws(SystemError) {
        _ = try Retry.check("fcntl") { cmkfs_fcntl_int(rawValue, F_SETFL, flags) }
    }

    /// flock(2) with `operation` (LOCK_EX, LOCK_SH, LOCK_UN, | LOCK_NB). A lock held elsewhere
    /// with LOCK_NB throws EWOULDBLOCK (EAGAIN).
    public func lock(_ operation: Int32) throws(SystemError) {
        _ = try Retry.check("flock") { systemFlock(rawValue, operation) }
    }

    /// flock(2) with `operation` (LOCK_EX or LOCK_SH), retried every `poll` seconds while
    /// another holder has it, for at most `wait` seconds. Returns false when the wait ran out;
    /// throws any other error at once.
    public func lock(_ operation: Int32, waitingUpTo wait: Double, poll: Double) throws(SystemError) -> Bool {
        var waited = 0.0
        while true {
            do throws(SystemError) {
                try lock(operation | LOCK_NB)
                return true
            } catch {
                guard error.errno == .EAGAIN else { throw error }
                guard waited < wait else { return false }
                usleep(useconds_t(poll * 1_000_000))
                waited += poll
            }
        }
    }

    /// A second descriptor for the same open file (dup(2) with FD_CLOEXEC).
    public func duplicate() throws(SystemError) -> FileDescriptor {
        FileDescriptor(adopting: try Retry.check("fcntl") { cmkfs_fcntl_int(rawValue, F_DUPFD_CLOEXEC, 0) })
    }

    /// Sets FS_APPEND_FL (chattr +a): EPERM without CAP_LINUX_IMMUTABLE, ENOTTY/EOPNOTSUPP where
    /// the filesystem has no such flag.
    public func setAppendOnly() throws(SystemError) {
        try Retry.checkReturned("ioctl(FS_IOC_SETFLAGS)") { cmkfs_set_append_only(rawValue) }
    }
}

/// Flags from <fcntl.h> that Swift's Glibc module hides (they need _GNU_SOURCE), as the system
/// headers define them.
public enum OpenFlags {
    public static let path = CMKFS_O_PATH
    public static let tmpFile = CMKFS_O_TMPFILE
    public static let noAccessTime = CMKFS_O_NOATIME
    public static let atEmptyPath = CMKFS_AT_EMPTY_PATH
}

/// flock(2) at file scope: inside `Descriptor` the name is shadowed, and `Glibc.flock` names the struct.
private func systemFlock(_ fd: Int32, _ operation: Int32) -> Int32 { flock(fd, operation) }
