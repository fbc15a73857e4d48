import Logging
import Glibc
import CFuse3
import CMKCrypto
import CMKFormat

extension FileSystem {
    func lookup(_ dir: Node, _ name: String) -> (fuse_entry_param, Int32) {
        let (backingName, rc) = backing(dir, name)
        guard rc == 0 else { return (fuse_entry_param(), rc) }
        return entry(dir, backingName)
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
        if inode.kind == S_IFREG, KernelChannel.currentRequestKillsSetIDBits {
            let fd = openAt(inode.procPath, relativeTo: AT_FDCWD, flags: O_RDONLY | O_CLOEXEC)
            if fd >= 0 { Self.killSetIDBits(fd); close(fd) }
        }
        return attributes(inode)
    }

    func mkdir(_ dir: Node, _ name: String, mode: mode_t, caller: Caller) -> (fuse_entry_param, Int32) {
        let (backingName, nrc) = backing(dir, name, creating: true)
        guard nrc == 0 else { return (fuse_entry_param(), nrc) }
        guard names != nil else {
            guard mkdirat(dir.fd, backingName, mode & 0o7777) == 0 else { return (fuse_entry_param(), errno) }
            chownToCaller(dir, backingName, caller)
            return entry(dir, backingName)
        }
        // Made under a hidden temporary name with its id inside, then renamed into place
        // (RENAME_NOREPLACE gives mkdir's EEXIST): no crash leaves a visible directory without
        // an id, whose entries could never be named.
        let temp = ".cmkfs-mkdir-" + hex((try? SecureRandom.bytes(8)) ?? [UInt8(truncatingIfNeeded: getpid())])
        guard mkdirat(dir.fd, temp, mode & 0o7777) == 0 else { return (fuse_entry_param(), errno) }
        let fd = openAt(temp, relativeTo: dir.fd, flags: O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        var rc: Int32 = fd >= 0 ? 0 : errno
        if rc == 0 {
            do { try DirectoryID.create(directoryFD: fd) } catch { rc = EIO; Self.logger.error("mkdir: \(error)") }
            close(fd)
        }
        if rc == 0 {
            chownToCaller(dir, temp, caller)
            if cmkfs_renameat2(dir.fd, temp, dir.fd, backingName, UInt32(RENAME_NOREPLACE)) != 0 { rc = errno }
        }
        guard rc == 0 else {
            _ = unlinkat(dir.fd, temp + "/" + NameCodec.directoryIDFile, 0)
            _ = unlinkat(dir.fd, temp, AT_REMOVEDIR)
            return (fuse_entry_param(), rc)
        }
        return entry(dir, backingName)
    }

    func rmdir(_ dir: Node, _ name: String) -> Int32 {
        let (backingName, nrc) = backing(dir, name)
        guard nrc == 0 else { return nrc }
        guard let names else { return unlinkat(dir.fd, backingName, AT_REMOVEDIR) == 0 ? 0 : errno }
        // The backing directory holds its id file: empty means nothing else. The kernel holds
        // the victim's lock for an rmdir, so no entry can appear in it meanwhile.
        let fd = openAt(backingName, relativeTo: dir.fd, flags: O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else { return errno }
        defer { close(fd) }
        let listing = DirectoryListing(fd: dup(fd))
        guard listing.refresh() == 0 else { return EIO }
        guard listing.entries.allSatisfy({ [".", "..", NameCodec.directoryIDFile].contains($0.name) }) else { return ENOTEMPTY }
        let id = try? DirectoryID.read(directoryFD: fd)
        _ = unlinkat(fd, NameCodec.directoryIDFile, 0)
        guard unlinkat(dir.fd, backingName, AT_REMOVEDIR) == 0 else {
            let rc = errno
            if let id { _ = try? DirectoryID.create(directoryFD: fd, id: id) }
            return rc
        }
        names.forget(backingName)
        names.directoriesChanged()
        return 0
    }

    /// Removing a file's last link also removes its key rows (in the next batch, see
    /// `PendingForgets`): the DEK is gone with the file. An open handle keeps its unwrapped key
    /// until it is closed.
    func unlink(_ dir: Node, _ name: String) -> Int32 {
        let (backingName, nrc) = backing(dir, name)
        guard nrc == 0 else { return nrc }
        return namespaceLock.withLock { _ in
            let fileID = lastLinkFileID(dir, backingName)
            guard unlinkat(dir.fd, backingName, 0) == 0 else { return errno }
            if let fileID { forgets.add(fileID) }
            names?.forget(backingName)
            return 0
        }
    }

    func rename(_ dir: Node, _ plainName: String, _ newDir: Node, _ plainNewName: String, flags: UInt32) -> Int32 {
        let (name, nrc) = backing(dir, plainName)
        guard nrc == 0 else { return nrc }
        let (newName, mrc) = backing(newDir, plainNewName, creating: true)
        guard mrc == 0 else { return mrc }
        return namespaceLock.withLock { _ in
            var replaced: FileID?
            let (src, rc) = lstat(dir, name)
            let (dst, drc) = lstat(newDir, newName)
            if flags & UInt32(RENAME_EXCHANGE) == 0,
               rc == 0, drc == 0, !(src.st_ino == dst.st_ino && src.st_dev == dst.st_dev) {
                replaced = lastLinkFileID(newDir, newName)
            }
            guard cmkfs_renameat2(dir.fd, name, newDir.fd, newName, flags) == 0 else { return errno }
            if let replaced { forgets.add(replaced) }
            if let names {
                // An exchange keeps both names; a move frees the old one. A directory's backing
                // name changed: cached audit paths may be stale.
                if flags & UInt32(RENAME_EXCHANGE) == 0 && name != newName { names.forget(name) }
                if (src.st_mode & S_IFMT) == S_IFDIR || (drc == 0 && (dst.st_mode & S_IFMT) == S_IFDIR) {
                    names.directoriesChanged()
                }
            }
            return 0
        }
    }

    func link(_ inode: Node, _ newDir: Node, _ plainNewName: String) -> (fuse_entry_param, Int32) {
        let (newName, nrc) = backing(newDir, plainNewName, creating: true)
        guard nrc == 0 else { return (fuse_entry_param(), nrc) }
        let rc: Int32 = namespaceLock.withLock { _ in
            // Through /proc with AT_SYMLINK_FOLLOW: links the very object the descriptor names.
            linkat(AT_FDCWD, inode.procPath, newDir.fd, newName, AT_SYMLINK_FOLLOW) == 0 ? 0 : errno
        }
        guard rc == 0 else { return (fuse_entry_param(), rc) }
        return entry(newDir, newName)
    }

    func symlink(target plainTarget: String, _ dir: Node, _ plainName: String, caller: Caller) -> (fuse_entry_param, Int32) {
        let (name, nrc) = backing(dir, plainName, creating: true)
        guard nrc == 0 else { return (fuse_entry_param(), nrc) }
        var target = plainTarget
        if let names {
            switch names.codec() {
            case .success(let codec):
                do { target = try codec.encryptTarget(plainTarget) } catch { return (fuse_entry_param(), error.errno) }
            case .failure(let rc): return (fuse_entry_param(), rc)
            }
        }
        guard symlinkat(target, dir.fd, name) == 0 else { return (fuse_entry_param(), errno) }
        chownToCaller(dir, name, caller)
        return entry(dir, name)
    }

    func readlink(_ inode: Node) -> (String, Int32) {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = readlinkat(inode.fd, "", &buffer, buffer.count - 1)
        guard n >= 0 else { return ("", errno) }
        let stored = String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        guard let names else { return (stored, 0) }
        switch names.codec() {
        case .success(let codec):
            do { return (try codec.decryptTarget(stored), 0) } catch {
                Self.logger.error("symlink inode \(inode.identity.inode): its target does not decrypt: \(error)")
                return ("", EIO)
            }
        case .failure(let rc): return ("", rc)
        }
    }

    /// FIFOs and sockets pass through; a regular file gets a key like `create`; device nodes are
    /// refused (EPERM): an encrypted volume is no place for them.
    func mknod(_ dir: Node, _ plainName: String, mode: mode_t, caller: Caller) -> (fuse_entry_param, Int32) {
        guard [S_IFIFO, S_IFSOCK, S_IFREG].contains(mode & S_IFMT) else { return (fuse_entry_param(), EPERM) }
        let (name, nrc) = backing(dir, plainName, creating: true)
        guard nrc == 0 else { return (fuse_entry_param(), nrc) }
        switch mode & S_IFMT {
        case S_IFIFO, S_IFSOCK:
            guard mknodat(dir.fd, name, mode, 0) == 0 else { return (fuse_entry_param(), errno) }
            chownToCaller(dir, name, caller)
            return entry(dir, name)
        case S_IFREG:
            var use = KeyUse()
            let (file, rc) = createFile(dir, name, mode: mode, caller: caller, use: &use)
            let arc = audit("create", use, rc: rc, path: mountPath(dir, plainName), caller: caller, detail: "mknod")
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
        guard fstatvfs(inode.fd, &st) == 0 else { return (st, errno) }
        // Names up to Linux's 255 bytes work even when the backing filesystem's limit is lower
        // than their encoding: long encodings are stored by hash (NameCodec).
        st.f_namemax = UInt(NameCodec.maxNameLength)
        return (st, 0)
    }
}

// UTIME_NOW and UTIME_OMIT are macros over shifts that Swift does not import (<sys/stat.h>).
private let utimeNow = (1 << 30) - 1
private let utimeOmit = (1 << 30) - 2
