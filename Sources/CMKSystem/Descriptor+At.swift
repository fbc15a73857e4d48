import Glibc
import CLinux

/// The `*at` calls, on `self` as the directory (`Descriptor.cwd` for plain paths). A path is
/// resolved as the kernel resolves it; with O_NOFOLLOW/AT_SYMLINK_NOFOLLOW where the caller
/// must not follow a link the backing tree may hold.
extension Descriptor {
    /// The call's name for messages: the plain call's when the directory is the working one
    /// (what the caller wrote), the `*at` call's otherwise.
    @usableFromInline
    func name(_ at: String, _ plain: String) -> String { self == .cwd ? plain : at }

    /// openat(2). `mode` matters with O_CREAT or O_TMPFILE.
    public func openat(_ path: String, _ flags: Int32, mode: mode_t = 0) throws(SystemError) -> FileDescriptor {
        FileDescriptor(adopting: try Retry.check(name("openat", "open"), path: path) { cmkfs_openat(rawValue, path, flags, mode) })
    }

    /// fstatat(2); `flags` AT_SYMLINK_NOFOLLOW and/or AT_EMPTY_PATH.
    public func stat(_ path: String, flags: Int32 = 0) throws(SystemError) -> Glibc.stat {
        var st = Glibc.stat()
        _ = try Retry.check(name("fstatat", "stat"), path: path) { fstatat(rawValue, path, &st, flags) }
        return st
    }

    /// unlinkat(2); AT_REMOVEDIR in `flags` for a directory.
    public func unlink(_ path: String, flags: Int32 = 0) throws(SystemError) {
        _ = try Retry.check(name("unlinkat", "unlink"), path: path) { unlinkat(rawValue, path, flags) }
    }

    public func mkdir(_ path: String, mode: mode_t) throws(SystemError) {
        _ = try Retry.check(name("mkdirat", "mkdir"), path: path) { mkdirat(rawValue, path, mode) }
    }

    public func mknod(_ path: String, mode: mode_t, device: dev_t) throws(SystemError) {
        _ = try Retry.check(name("mknodat", "mknod"), path: path) { mknodat(rawValue, path, mode, device) }
    }

    /// renameat2(2): `path` here to `newPath` in `newDirectory`; `flags` RENAME_NOREPLACE or
    /// RENAME_EXCHANGE (`Descriptor.noReplace`, `.exchange`), 0 for a plain renameat(2).
    public func rename(_ path: String, to newPath: String, in newDirectory: Descriptor, flags: UInt32 = 0) throws(SystemError) {
        if flags == 0 {
            _ = try Retry.check(name("renameat", "rename"), path: path) { renameat(rawValue, path, newDirectory.rawValue, newPath) }
        } else {
            _ = try Retry.check("renameat2", path: path) { cmkfs_renameat2(rawValue, path, newDirectory.rawValue, newPath, flags) }
        }
    }

    public static let noReplace = CMKFS_RENAME_NOREPLACE
    public static let exchange = CMKFS_RENAME_EXCHANGE

    /// linkat(2): a new name `newPath` in `newDirectory` for `path` here (AT_EMPTY_PATH with ""
    /// links the open file itself, as for an O_TMPFILE file).
    public func link(_ path: String, to newPath: String, in newDirectory: Descriptor, flags: Int32 = 0) throws(SystemError) {
        _ = try Retry.check(name("linkat", "link"), path: newPath) { linkat(rawValue, path, newDirectory.rawValue, newPath, flags) }
    }

    /// symlinkat(2): a link named `path` here whose target is `target`.
    public func symlink(_ path: String, target: String) throws(SystemError) {
        _ = try Retry.check(name("symlinkat", "symlink"), path: path) { symlinkat(target, rawValue, path) }
    }

    /// readlinkat(2): the target's bytes, however long. `capacity` is the first buffer's size:
    /// a caller expecting a long target (a path under /proc/self/fd) saves a second call.
    public func readlink(_ path: String, capacity: Int = 256) throws(SystemError) -> [UInt8] {
        var capacity = capacity
        while true {
            var buffer = [CChar](repeating: 0, count: capacity)
            let n = try Retry.check(name("readlinkat", "readlink"), path: path) { readlinkat(rawValue, path, &buffer, capacity) }
            if n < capacity { return buffer.prefix(n).map { UInt8(bitPattern: $0) } }
            capacity *= 4
        }
    }

    public func chmod(_ path: String, mode: mode_t, flags: Int32 = 0) throws(SystemError) {
        _ = try Retry.check(name("fchmodat", "chmod"), path: path) { fchmodat(rawValue, path, mode, flags) }
    }

    /// Changes the mode of the file this descriptor names, an `O_PATH` descriptor included,
    /// through fchmodat2(2) with `AT_EMPTY_PATH`: no walk through `/proc/self/fd`, which cost
    /// more than the call itself (tar sets the mode of every file it writes). Throws `ENOSYS`
    /// before Linux 6.6; the caller then goes through `/proc`. A symlink's mode cannot be
    /// changed on Linux: `EOPNOTSUPP`.
    public func chmodSelf(mode: mode_t) throws(SystemError) {
        _ = try Retry.check("fchmodat2") { cmkfs_fchmod_empty_path(rawValue, mode) }
    }

    public func chown(_ path: String, uid: uid_t, gid: gid_t, flags: Int32 = 0) throws(SystemError) {
        _ = try Retry.check(name("fchownat", "chown"), path: path) { fchownat(rawValue, path, uid, gid, flags) }
    }

    /// utimensat(2) with two timespecs (UTIME_NOW/UTIME_OMIT allowed); "" with AT_EMPTY_PATH for
    /// the open file itself.
    public func setTimes(_ path: String, access: timespec, modification: timespec, flags: Int32 = 0) throws(SystemError) {
        var times = (access, modification)
        _ = try Retry.check("utimensat", path: path) {
            withUnsafePointer(to: &times) { $0.withMemoryRebound(to: timespec.self, capacity: 2) { utimensat(rawValue, path, $0, flags) } }
        }
    }

    /// faccessat(2).
    public func access(_ path: String, mode: Int32, flags: Int32 = 0) throws(SystemError) {
        _ = try Retry.check(name("faccessat", "access"), path: path) { faccessat(rawValue, path, mode, flags) }
    }

    /// truncate(2) by path (there is no truncateat).
    public static func truncate(_ path: String, to size: Int) throws(SystemError) {
        _ = try Retry.check("truncate", path: path) { Glibc.truncate(path, off_t(size)) }
    }
}
