import Glibc
import CFuse3
import CMKFormat

extension FileSystem {
    func lookup(_ dir: Node, _ name: String) -> (fuse_entry_param, Int32) {
        entry(dir, name)
    }

    func getattr(_ inode: Node) -> (stat, Int32) {
        attributes(inode)
    }

    /// setattr: mode, owner, size and times, in that order, then the new attributes.
    func setattr(_ inode: Node, _ attr: stat, toSet: Int32, fh: UInt64?, caller: Caller) -> (stat, Int32) {
        if toSet & FUSE_SET_ATTR_MODE != 0 {
            guard inode.kind != S_IFLNK else { return (stat(), EOPNOTSUPP) }
            guard fchmodat(AT_FDCWD, inode.procPath, attr.st_mode & 0o7777, 0) == 0 else { return (stat(), errno) }
        }
        if toSet & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID) != 0 {
            let uid = toSet & FUSE_SET_ATTR_UID != 0 ? attr.st_uid : uid_t.max
            let gid = toSet & FUSE_SET_ATTR_GID != 0 ? attr.st_gid : gid_t.max
            guard fchownat(inode.fd, "", uid, gid, CMKFS_AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) == 0 else { return (stat(), errno) }
        }
        if toSet & FUSE_SET_ATTR_SIZE != 0 {
            let rc = truncate(inode, fh: fh, to: Int(attr.st_size), caller: caller)
            guard rc == 0 else { return (stat(), rc) }
        }
        if toSet & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME) != 0 {
            var times = [timespec(tv_sec: 0, tv_nsec: utimeOmit), timespec(tv_sec: 0, tv_nsec: utimeOmit)]
            if toSet & FUSE_SET_ATTR_ATIME_NOW != 0 { times[0].tv_nsec = utimeNow }
            else if toSet & FUSE_SET_ATTR_ATIME != 0 { times[0] = attr.st_atim }
            if toSet & FUSE_SET_ATTR_MTIME_NOW != 0 { times[1].tv_nsec = utimeNow }
            else if toSet & FUSE_SET_ATTR_MTIME != 0 { times[1] = attr.st_mtim }
            // A symlink's own times through its CMKFS_O_PATH descriptor; anything else through /proc.
            let rc = inode.kind == S_IFLNK
                ? utimensat(inode.fd, "", times, CMKFS_AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW)
                : utimensat(AT_FDCWD, inode.procPath, times, 0)
            guard rc == 0 else { return (stat(), errno) }
        }
        return attributes(inode)
    }

    func mkdir(_ dir: Node, _ name: String, mode: mode_t, caller: Caller) -> (fuse_entry_param, Int32) {
        guard mkdirat(dir.fd, name, mode & 0o7777) == 0 else { return (fuse_entry_param(), errno) }
        chownToCaller(dir, name, caller)
        return entry(dir, name)
    }

    func rmdir(_ dir: Node, _ name: String) -> Int32 {
        unlinkat(dir.fd, name, AT_REMOVEDIR) == 0 ? 0 : errno
    }

    /// Removing a file's last link also removes its key rows: the DEK is gone with the file.
    /// An open handle keeps its unwrapped key until it is closed.
    func unlink(_ dir: Node, _ name: String) -> Int32 {
        namespaceLock.withLock { _ in
            let fileID = lastLinkFileID(dir, name)
            guard unlinkat(dir.fd, name, 0) == 0 else { return errno }
            if let fileID { forget(fileID, name) }
            return 0
        }
    }

    func rename(_ dir: Node, _ name: String, _ newDir: Node, _ newName: String, flags: UInt32) -> Int32 {
        namespaceLock.withLock { _ in
            var replaced: FileID?
            if flags & UInt32(RENAME_EXCHANGE) == 0 {
                let (src, rc) = lstat(dir, name)
                let (dst, drc) = lstat(newDir, newName)
                if rc == 0, drc == 0, !(src.st_ino == dst.st_ino && src.st_dev == dst.st_dev) {
                    replaced = lastLinkFileID(newDir, newName)
                }
            }
            guard cmkfs_renameat2(dir.fd, name, newDir.fd, newName, flags) == 0 else { return errno }
            if let replaced { forget(replaced, newName) }
            return 0
        }
    }

    func link(_ inode: Node, _ newDir: Node, _ newName: String) -> (fuse_entry_param, Int32) {
        let rc: Int32 = namespaceLock.withLock { _ in
            // Through /proc with AT_SYMLINK_FOLLOW: links the very object the descriptor names.
            linkat(AT_FDCWD, inode.procPath, newDir.fd, newName, AT_SYMLINK_FOLLOW) == 0 ? 0 : errno
        }
        guard rc == 0 else { return (fuse_entry_param(), rc) }
        return entry(newDir, newName)
    }

    func symlink(target: String, _ dir: Node, _ name: String, caller: Caller) -> (fuse_entry_param, Int32) {
        guard symlinkat(target, dir.fd, name) == 0 else { return (fuse_entry_param(), errno) }
        chownToCaller(dir, name, caller)
        return entry(dir, name)
    }

    func readlink(_ inode: Node) -> (String, Int32) {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = readlinkat(inode.fd, "", &buffer, buffer.count - 1)
        guard n >= 0 else { return ("", errno) }
        return (String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self), 0)
    }

    /// FIFOs and sockets pass through; a regular file gets a key like `create`; device nodes are
    /// refused (EPERM): an encrypted volume is no place for them.
    func mknod(_ dir: Node, _ name: String, mode: mode_t, caller: Caller) -> (fuse_entry_param, Int32) {
        switch mode & S_IFMT {
        case S_IFIFO, S_IFSOCK:
            guard mknodat(dir.fd, name, mode, 0) == 0 else { return (fuse_entry_param(), errno) }
            chownToCaller(dir, name, caller)
            return entry(dir, name)
        case S_IFREG:
            var use = KeyUse()
            let (file, rc) = createFile(dir, name, mode: mode, caller: caller, use: &use)
            let arc = audit("create", use, rc: rc, path: mountPath(dir, name), caller: caller, detail: "mknod")
            guard let file else { return (fuse_entry_param(), rc) }
            defer { openFiles.release(file, cache: cache) }
            if arc != 0 { unlinkat(dir.fd, name, 0); try? volume.forgetFile(file.file.fileID); return (fuse_entry_param(), arc) }
            return entry(for: file)
        default:
            return (fuse_entry_param(), EPERM)
        }
    }

    func statfs(_ inode: Node) -> (statvfs, Int32) {
        var st = statvfs()
        return fstatvfs(inode.fd, &st) == 0 ? (st, 0) : (st, errno)
    }

    func forget(_ fileID: FileID, _ name: String) {
        do { try volume.forgetFile(fileID) } catch {
            // The file is gone; a leftover row is an orphan for fsck, not a loss of data.
            Self.log("\(name): removed, but its key rows were not: \(error)")
        }
    }
}

// UTIME_NOW and UTIME_OMIT are macros over shifts that Swift does not import (<sys/stat.h>).
private let utimeNow = (1 << 30) - 1
private let utimeOmit = (1 << 30) - 2
