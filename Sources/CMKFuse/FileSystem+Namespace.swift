import Glibc
import CFuse3
import CMKFormat

extension FileSystem {
    func getattr(_ rel: String?, fh: UInt64?, _ out: UnsafeMutablePointer<stat>) -> Int32 {
        if let fh, let handle = handles.get(fh) {
            guard fstat(handle.file.fd, out) == 0 else { return -errno }
        } else {
            guard let rel else { return -EBADF }
            guard fstatat(rootFD, rel, out, AT_SYMLINK_NOFOLLOW) == 0 else { return -errno }
        }
        present(&out.pointee)
        return 0
    }

    func mkdir(_ rel: String, mode: mode_t) -> Int32 {
        guard mkdirat(rootFD, rel, mode & 0o7777) == 0 else { return -errno }
        chownToCaller(rel)
        return 0
    }

    func rmdir(_ rel: String) -> Int32 {
        unlinkat(rootFD, rel, AT_REMOVEDIR) == 0 ? 0 : -errno
    }

    /// Removing a file's last link also removes its key rows: the DEK is gone with the file.
    /// An open handle keeps its unwrapped key until it is closed.
    func unlink(_ rel: String) -> Int32 {
        namespaceLock.withLock { _ in
            let fileID = lastLinkFileID(rel)
            guard unlinkat(rootFD, rel, 0) == 0 else { return -errno }
            if let fileID { forget(fileID, rel) }
            return 0
        }
    }

    func rename(_ from: String, _ to: String, flags: UInt32) -> Int32 {
        namespaceLock.withLock { _ in
            var replaced: FileID?
            if flags & UInt32(RENAME_EXCHANGE) == 0 {
                let (src, rc) = lstat(from)
                let (dst, drc) = lstat(to)
                if rc == 0, drc == 0, !(src.st_ino == dst.st_ino && src.st_dev == dst.st_dev) {
                    replaced = lastLinkFileID(to)
                }
            }
            guard cmkfs_renameat2(rootFD, from, rootFD, to, flags) == 0 else { return -errno }
            if let replaced { forget(replaced, to) }
            return 0
        }
    }

    func link(_ from: String, _ to: String) -> Int32 {
        namespaceLock.withLock { _ in
            linkat(rootFD, from, rootFD, to, 0) == 0 ? 0 : -errno
        }
    }

    func symlink(target: String, _ rel: String) -> Int32 {
        guard symlinkat(target, rootFD, rel) == 0 else { return -errno }
        chownToCaller(rel)
        return 0
    }

    func readlink(_ rel: String, into buffer: UnsafeMutablePointer<CChar>, size: Int) -> Int32 {
        guard size > 0 else { return -EINVAL }
        let n = readlinkat(rootFD, rel, buffer, size - 1)
        guard n >= 0 else { return -errno }
        buffer[n] = 0
        return 0
    }

    /// FIFOs and sockets pass through; a regular file gets a key like `create`; device nodes are
    /// refused (EPERM): an encrypted volume is no place for them.
    func mknod(_ rel: String, mode: mode_t, device: dev_t) -> Int32 {
        switch mode & S_IFMT {
        case S_IFIFO, S_IFSOCK:
            guard mknodat(rootFD, rel, mode, 0) == 0 else { return -errno }
            chownToCaller(rel)
            return 0
        case S_IFREG:
            let (file, rc) = createFile(rel, mode: mode, exclusive: true)
            guard let file else { return rc }
            openFiles.release(file)
            return 0
        default:
            return -EPERM
        }
    }

    func chmod(_ rel: String?, fh: UInt64?, mode: mode_t) -> Int32 {
        if let fh, let handle = handles.get(fh) { return fchmod(handle.file.fd, mode) == 0 ? 0 : -errno }
        guard let rel else { return -EBADF }
        return fchmodat(rootFD, rel, mode, 0) == 0 ? 0 : -errno
    }

    func chown(_ rel: String?, fh: UInt64?, uid: uid_t, gid: gid_t) -> Int32 {
        if let fh, let handle = handles.get(fh) { return fchown(handle.file.fd, uid, gid) == 0 ? 0 : -errno }
        guard let rel else { return -EBADF }
        return fchownat(rootFD, rel, uid, gid, AT_SYMLINK_NOFOLLOW) == 0 ? 0 : -errno
    }

    func utimens(_ rel: String?, fh: UInt64?, _ times: UnsafePointer<timespec>?) -> Int32 {
        if let fh, let handle = handles.get(fh) { return futimens(handle.file.fd, times) == 0 ? 0 : -errno }
        guard let rel else { return -EBADF }
        return utimensat(rootFD, rel, times, AT_SYMLINK_NOFOLLOW) == 0 ? 0 : -errno
    }

    func statfs(_ out: UnsafeMutablePointer<statvfs>) -> Int32 {
        fstatvfs(rootFD, out) == 0 ? 0 : -errno
    }

    /// Only reached without `default_permissions`; the mount always sets it, so this answers
    /// existence and leaves permission checks to the kernel.
    func access(_ rel: String, mask: Int32) -> Int32 {
        lstat(rel).1
    }

    /// opendir: the handle is a descriptor on the backing directory, so a listing follows the
    /// directory across renames and needs no path.
    func opendir(_ rel: String) -> (UInt64, Int32) {
        let fd = openAt(rel, relativeTo: rootFD, flags: O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { return (0, -errno) }
        return (UInt64(fd), 0)
    }

    func releasedir(_ fh: UInt64) -> Int32 {
        close(Int32(truncatingIfNeeded: fh)) == 0 ? 0 : -errno
    }

    /// Lists a directory in one pass (libfuse buffers it and serves offsets itself).
    func readdir(_ fh: UInt64, _ emit: (String, stat) -> Bool) -> Int32 {
        let fd = dup(Int32(truncatingIfNeeded: fh))
        guard fd >= 0 else { return -errno }
        guard let dir = fdopendir(fd) else { let e = errno; close(fd); return -e }
        defer { closedir(dir) }
        // The duplicate shares the file offset with the handle: start from the top every time.
        rewinddir(dir)
        while let entry = Glibc.readdir(dir) {
            var st = stat()
            st.st_ino = entry.pointee.d_ino
            st.st_mode = mode_t(entry.pointee.d_type) << 12
            let name = withUnsafePointer(to: entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            if !emit(name, st) { break }
        }
        return 0
    }

    func forget(_ fileID: FileID, _ rel: String) {
        do { try volume.forgetFile(fileID) } catch {
            // The file is gone; a leftover row is an orphan for fsck, not a loss of data.
            Self.log("\(rel): removed, but its key rows were not: \(error)")
        }
    }
}
