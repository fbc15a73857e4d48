import Logging
import Glibc
import Foundation
import CFuse3
import CLinuxFS
import CMKCrypto
import CMKFormat

extension FileSystem {
    func lookup(_ dir: Node, _ name: String) throws(FSError) -> fuse_entry_param {
        // Read before the lookup: a change of names while it runs makes its note stale.
        let generation = auditNames.current
        let e = try entry(dir, try backing(dir, name))
        noteAuditName(e, in: dir, name, at: generation)
        return e
    }

    func getattr(_ inode: Node) throws(FSError) -> stat {
        try attributes(inode)
    }

    /// setattr: mode, owner, size and times, in that order, then the new attributes.
    func setattr(_ inode: Node, _ attr: stat, toSet: Int32, fh: UInt64?, caller: Caller) throws(FSError) -> stat {
        if toSet & FUSE_SET_ATTR_MODE != 0 {
            guard inode.kind != S_IFLNK else { throw .posix(EOPNOTSUPP) }
            guard fchmodat(AT_FDCWD, inode.procPath, attr.st_mode & 0o7777, 0) == 0 else { throw .posix(errno) }
        }
        if toSet & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID) != 0 {
            let uid = toSet & FUSE_SET_ATTR_UID != 0 ? attr.st_uid : uid_t.max
            let gid = toSet & FUSE_SET_ATTR_GID != 0 ? attr.st_gid : gid_t.max
            guard fchownat(inode.fd, "", uid, gid, CMKFS_AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) == 0 else { throw .posix(errno) }
        }
        if toSet & FUSE_SET_ATTR_SIZE != 0 {
            try truncate(inode, fh: fh, to: Int(attr.st_size), caller: caller)
        }
        if toSet & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME) != 0 {
            var times = [timespec(tv_sec: 0, tv_nsec: utimeOmit), timespec(tv_sec: 0, tv_nsec: utimeOmit)]
            if toSet & FUSE_SET_ATTR_ATIME_NOW != 0 { times[0].tv_nsec = utimeNow }
            else if toSet & FUSE_SET_ATTR_ATIME != 0 { times[0] = attr.st_atim }
            if toSet & FUSE_SET_ATTR_MTIME_NOW != 0 { times[1].tv_nsec = utimeNow }
            else if toSet & FUSE_SET_ATTR_MTIME != 0 { times[1] = attr.st_mtim }
            // Through the CMKFS_O_PATH descriptor itself (a symlink's own times too): no walk
            // through /proc, which cost more than the call (tar sets times on every file).
            guard utimensat(inode.fd, "", times, CMKFS_AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) == 0 else { throw .posix(errno) }
        }
        if inode.kind == S_IFREG, KernelChannel.currentRequestKillsSetIDBits {
            let fd = openAt(inode.procPath, relativeTo: AT_FDCWD, flags: O_RDONLY | O_CLOEXEC)
            if fd >= 0 { Self.killSetIDBits(fd); close(fd) }
        }
        return try attributes(inode)
    }

    func mkdir(_ dir: Node, _ name: String, mode: mode_t, caller: Caller) throws(FSError) -> fuse_entry_param {
        let backingName = try backing(dir, name, creating: true)
        guard names != nil else {
            guard mkdirat(dir.fd, backingName, mode & 0o7777) == 0 else { throw .posix(errno) }
            settle(dir, backingName, mode: mode, isDirectory: true, caller: caller)
            return try entry(dir, backingName)
        }
        // Made under a hidden temporary name with its id inside, then renamed into place
        // (RENAME_NOREPLACE gives mkdir's EEXIST): no crash leaves a visible directory without
        // an id, whose entries could never be named.
        let temp = ".cmkfs-mkdir-" + hex((try? SecureRandom.bytes(8)) ?? [UInt8(truncatingIfNeeded: getpid())])
        guard mkdirat(dir.fd, temp, mode & 0o7777) == 0 else { throw .posix(errno) }
        let fd = openAt(temp, relativeTo: dir.fd, flags: O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        var failure: FSError? = fd >= 0 ? nil : .posix(errno)
        if failure == nil {
            // The id file could not be written (logged): an I/O failure, whatever the call said.
            do { try DirectoryID.create(directoryFD: fd) } catch { failure = .posix(EIO); Self.logger.error("mkdir: \(error)") }
            close(fd)
        }
        if failure == nil {
            settle(dir, temp, mode: mode, isDirectory: true, caller: caller)
            if cmkfs_renameat2(dir.fd, temp, dir.fd, backingName, UInt32(RENAME_NOREPLACE)) != 0 { failure = .posix(errno) }
        }
        if let failure {
            _ = unlinkat(dir.fd, temp + "/" + NameCodec.directoryIDFile, 0)
            _ = unlinkat(dir.fd, temp, AT_REMOVEDIR)
            throw failure
        }
        return try entry(dir, backingName)
    }

    func rmdir(_ dir: Node, _ name: String) throws(FSError) {
        defer { auditNames.namespaceChanged() }
        let backingName = try backing(dir, name)
        guard let names else {
            guard unlinkat(dir.fd, backingName, AT_REMOVEDIR) == 0 else { throw .posix(errno) }
            return
        }
        let (fd, id) = try emptyDirectoryIDFile(dir, backingName)
        defer { close(fd) }
        guard unlinkat(dir.fd, backingName, AT_REMOVEDIR) == 0 else {
            let rc = errno
            if let id { _ = try? DirectoryID.create(directoryFD: fd, id: id) }
            throw .posix(rc)
        }
        names.forget(backingName)
        names.directoriesChanged()
    }

    /// Removes the id file of the backing directory `name` in `dir` if that file is all it
    /// holds, and returns the directory (open; the caller closes it) with the id it had, to put
    /// back if the removal or replacement that needed this fails. ENOTEMPTY otherwise. The kernel
    /// holds the directory's lock for an rmdir or a rename onto it, so no entry can appear in it
    /// meanwhile.
    func emptyDirectoryIDFile(_ dir: Node, _ name: String) throws(FSError) -> (fd: Int32, id: [UInt8]?) {
        let fd = openAt(name, relativeTo: dir.fd, flags: O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else { throw .posix(errno) }
        let listing = DirectoryListing(fd: dup(fd))
        // Whatever stopped the listing, the directory cannot be shown empty: EIO, as before.
        guard (try? listing.refresh()) != nil else { close(fd); throw .posix(EIO) }
        guard listing.entries.allSatisfy({ [".", "..", NameCodec.directoryIDFile].contains($0.name) }) else {
            close(fd)
            throw .posix(ENOTEMPTY)
        }
        let id = try? DirectoryID.read(directoryFD: fd)
        _ = unlinkat(fd, NameCodec.directoryIDFile, 0)
        return (fd, id)
    }

    /// Removing a file's last link also removes its key rows (in the next batch, see
    /// `PendingForgets`): the DEK is gone with the file. An open handle keeps its unwrapped key
    /// until it is closed.
    func unlink(_ dir: Node, _ name: String) throws(FSError) {
        defer { auditNames.namespaceChanged() }
        let backingName = try backing(dir, name)
        try namespaceLock.withLock { _ throws(FSError) in
            // One lstat for the three questions: the kernel holds the directory locked and the
            // namespace lock keeps our own renames and links out, so the entry stays as it is.
            let found = lstat(dir, backingName)
            let st = found ?? stat()
            let file = found == nil ? nil : bindsNames ? regularFileID(dir, backingName, st: st)
                : lastLinkFileID(dir, backingName, st: st).map { ($0, true) }
            let longTarget = found == nil ? nil : lastLinkLongTarget(dir, backingName, st: st)
            guard unlinkat(dir.fd, backingName, 0) == 0 else { throw .posix(errno) }
            if let file, file.last { forgets.add(file.id) }
            // Another link remains: only this entry's binding goes.
            if let file, !file.last, let link = entryLink(dir, backingName) {
                try? changeBindings(add: [], remove: [(file.id, link)])
                entryRemoved(InodeIdentity(st), link)
            }
            if let longTarget { names?.forgetTarget(longTarget) }
            names?.forget(backingName)
        }
    }

    func rename(_ dir: Node, _ plainName: String, _ newDir: Node, _ plainNewName: String, flags: UInt32) throws(FSError) {
        defer { auditNames.namespaceChanged() }
        let name = try backing(dir, plainName)
        let newName = try backing(newDir, plainNewName, creating: true)
        try namespaceLock.withLock { _ throws(FSError) in
            var replaced: FileID?, replacedTarget: String?
            let src = lstat(dir, name), dst = lstat(newDir, newName)
            // Both exist and are not one inode (a rename onto another name of itself changes nothing).
            var distinct = false
            if let src, let dst { distinct = !(src.st_ino == dst.st_ino && src.st_dev == dst.st_dev) }
            if flags & UInt32(RENAME_EXCHANGE) == 0, distinct {
                replaced = lastLinkFileID(newDir, newName)
                replacedTarget = lastLinkLongTarget(newDir, newName)
            }
            // A directory moved onto an empty directory replaces it (POSIX): the target's id
            // file is all that keeps its backing directory from being empty, so it goes first
            // and comes back if the rename fails.
            var victimID: (fd: Int32, id: [UInt8]?)?
            if names != nil, flags & UInt32(RENAME_EXCHANGE | RENAME_NOREPLACE) == 0, distinct, let src, let dst,
               (src.st_mode & S_IFMT) == S_IFDIR, (dst.st_mode & S_IFMT) == S_IFDIR {
                victimID = try emptyDirectoryIDFile(newDir, newName)
            }
            defer { if let victimID { close(victimID.fd) } }
            let bindings = renameBindings(dir, name, src: src, newDir, newName, dst: dst,
                                          exchange: flags & UInt32(RENAME_EXCHANGE) != 0)
            if !bindings.add.isEmpty { try changeBindings(add: bindings.add) }
            guard cmkfs_renameat2(dir.fd, name, newDir.fd, newName, flags) == 0 else {
                let e = errno
                if let victimID { _ = try? DirectoryID.create(directoryFD: victimID.fd, id: victimID.id) }
                try? changeBindings(add: [], remove: bindings.add)
                throw .posix(e)
            }
            try? changeBindings(add: [], remove: bindings.remove)
            if let (identity, link) = bindings.replaced { entryRemoved(identity, link) }
            for (identity, link) in bindings.moved {
                inodes.inode(for: identity)?.entryLink.withLock { $0 = (link, link) }
            }
            if let replaced { forgets.add(replaced) }
            if let replacedTarget { names?.forgetTarget(replacedTarget) }
            if let names {
                // An exchange keeps both names; a move frees the old one. A directory's backing
                // name changed: cached audit paths may be stale.
                if flags & UInt32(RENAME_EXCHANGE) == 0 && name != newName { names.forget(name) }
                if [src, dst].contains(where: { $0.map { ($0.st_mode & S_IFMT) == S_IFDIR } ?? false }) {
                    names.directoriesChanged()
                }
            }
        }
    }

    func link(_ inode: Node, _ newDir: Node, _ plainNewName: String) throws(FSError) -> fuse_entry_param {
        defer { auditNames.namespaceChanged() }
        let newName = try backing(newDir, plainNewName, creating: true)
        try namespaceLock.withLock { _ throws(FSError) in
            // The new entry's binding first: a crash leaves a stale row, never an unbound entry.
            var bound: (FileID, EntryLink)?
            // An existing name (the kernel looked first; the directory is locked) keeps its row.
            if lstat(newDir, newName) != nil { throw .posix(EEXIST) }
            if bindsNames, inode.kind == S_IFREG, let link = entryLink(newDir, newName) {
                let fd = openAt(inode.procPath, relativeTo: AT_FDCWD, flags: O_RDONLY | O_CLOEXEC | CMKFS_O_NOATIME)
                let id = fd >= 0 ? try? ContentFile.readFileID(fd: fd) : nil
                if fd >= 0 { close(fd) }
                if let id {
                    try changeBindings(add: [(id, link)])
                    bound = (id, link)
                }
            }
            // Through /proc with AT_SYMLINK_FOLLOW: links the very object the descriptor names.
            guard linkat(AT_FDCWD, inode.procPath, newDir.fd, newName, AT_SYMLINK_FOLLOW) == 0 else {
                let e = errno
                if let bound { try? changeBindings(add: [], remove: [bound]) }
                throw .posix(e)
            }
        }
        return try entry(newDir, newName)
    }

    func symlink(target plainTarget: String, _ dir: Node, _ plainName: String, caller: Caller) throws(FSError) -> fuse_entry_param {
        guard plainTarget != LowLevelCallbacks.invalidName else { throw .posix(EILSEQ) }
        let name = try backing(dir, plainName, creating: true)
        var target = plainTarget
        if let names { target = try names.storedTarget(plainTarget) }
        guard symlinkat(target, dir.fd, name) == 0 else {
            let rc = errno
            names?.forgetTarget(target)
            throw .posix(rc)
        }
        settleSymlink(dir, name, caller: caller)
        return try entry(dir, name)
    }

    func readlink(_ inode: Node) throws(FSError) -> String {
        do { return try target(ofSymlink: inode.fd) } catch {
            if error.errno == EIO { Self.logger.error("symlink inode \(inode.identity.inode): its target does not decrypt") }
            throw error
        }
    }

    /// The plaintext target of the symlink open at `fd` (`CMKFS_O_PATH`).
    func target(ofSymlink fd: Int32) throws(FSError) -> String {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = readlinkat(fd, "", &buffer, buffer.count - 1)
        guard n >= 0 else { throw .posix(errno) }
        let stored = String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        guard let names else { return stored }
        return try names.plainTarget(stored)
    }

    /// FIFOs, sockets and device nodes are made as they are in the backing tree; a regular file
    /// gets a key like `create`. A device node needs CAP_MKNOD, as on ext4 (the kernel checks it
    /// too); the mount is `nodev`, so no node is ever opened as a device through cmkfs
    /// (docs/on-disk-format.md, "Special files").
    func mknod(_ dir: Node, _ plainName: String, mode: mode_t, rdev: dev_t, caller: Caller) throws(FSError) -> fuse_entry_param {
        let type = mode & S_IFMT
        guard [S_IFIFO, S_IFSOCK, S_IFREG, S_IFCHR, S_IFBLK].contains(type) else { throw .posix(EINVAL) }
        let device = type == S_IFCHR || type == S_IFBLK
        if device && !Self.mayMakeDevices(caller) { throw .posix(EPERM) }
        let name = try backing(dir, plainName, creating: true)
        guard type == S_IFREG else {
            guard mknodat(dir.fd, name, mode, device ? rdev : 0) == 0 else { throw .posix(errno) }
            settle(dir, name, mode: mode, isDirectory: false, caller: caller)
            return try entry(dir, name)
        }
        var use = KeyUse("create", caller: caller)
        let file: OpenFile, bound: EntryLink?
        do { (file, bound) = try createFile(dir, name, mode: mode, caller: caller, use: &use) } catch {
            audit("create", use, failure: error, path: mountPath(dir, plainName), caller: caller, detail: "mknod")
            throw error
        }
        defer { openFiles.release(file) }
        do { try audit("create", use, path: mountPath(dir, plainName), caller: caller, detail: "mknod") } catch {
            unlinkat(dir.fd, name, 0)
            try? volume.forgetFile(file.file.fileID)
            throw error
        }
        return try entry(for: file, link: entryLink(dir, name), bound: bound)
    }

    /// Whether the calling process holds CAP_MKNOD (its effective set in /proc; uid 0 when the
    /// kernel did not say which process called).
    static func mayMakeDevices(_ caller: Caller) -> Bool {
        guard caller.pid > 0, let status = try? String(contentsOfFile: "/proc/\(caller.pid)/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("CapEff:") }),
              let caps = UInt64(line.dropFirst("CapEff:".count).trimmingCharacters(in: .whitespaces), radix: 16)
        else { return caller.uid == 0 }
        let capMknod: UInt64 = 27
        return caps & (1 << capMknod) != 0
    }

    func statfs(_ inode: Node) throws(FSError) -> statvfs {
        var st = statvfs()
        guard fstatvfs(inode.fd, &st) == 0 else { throw .posix(errno) }
        // Names up to Linux's 255 bytes work even when the backing filesystem's limit is lower
        // than their encoding: long encodings are stored by hash (NameCodec).
        st.f_namemax = UInt(NameCodec.maxNameLength)
        return st
    }
}

// UTIME_NOW and UTIME_OMIT are macros over shifts that Swift does not import (<sys/stat.h>).
private let utimeNow = (1 << 30) - 1
private let utimeOmit = (1 << 30) - 2
