import Logging
import Glibc
import Foundation
import CFuse3
import CMKCrypto
import CMKFormat
import CMKSystem

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
        // Every request that may take space in the backing filesystem, and statfs, first waits
        // for the blocks of the files unlinked before it to be freed (`PendingEvictions`).
        evictions.drain()
        if toSet & FUSE_SET_ATTR_MODE != 0 {
            guard inode.kind != S_IFLNK else { throw .posix(EOPNOTSUPP) }
            try system { () throws(SystemError) in try Self.chmod(inode, attr.st_mode & 0o7777) }
        }
        if toSet & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID) != 0 {
            let uid = toSet & FUSE_SET_ATTR_UID != 0 ? attr.st_uid : uid_t.max
            let gid = toSet & FUSE_SET_ATTR_GID != 0 ? attr.st_gid : gid_t.max
            try system { () throws(SystemError) in
                try inode.descriptor.chown("", uid: uid, gid: gid, flags: OpenFlags.atEmptyPath | AT_SYMLINK_NOFOLLOW)
            }
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
            // Through the O_PATH descriptor itself (a symlink's own times too): no walk
            // through /proc, which cost more than the call (tar sets times on every file).
            try system { () throws(SystemError) in
                try inode.descriptor.setTimes("", access: times[0], modification: times[1], flags: OpenFlags.atEmptyPath | AT_SYMLINK_NOFOLLOW)
            }
        }
        // One stat serves the set-id check and the reply: tar's chown of every file took two.
        let st = try backingAttributes(inode)
        if inode.kind == S_IFREG, KernelChannel.currentRequestKillsSetIDBits || Self.isChownOfNeither(toSet, st, caller),
           Self.killSetIDBits(of: inode, st) {
            return try attributes(inode)
        }
        return presented(inode, st)
    }

    /// Whether a SETATTR that sets nothing is `chown(file, -1, -1)` by the file's owner or a
    /// caller with CAP_FOWNER, which on Linux takes a regular file's set-id bits like any chown.
    /// With KILLPRIV_V2 the kernel leaves that to the daemon and sends no attribute at all. It
    /// sends the same empty SETATTR when it removes privileges before another user's write
    /// (whose WRITE is flagged as well), and cannot say which: so another user's
    /// `chown(-1, -1)`, refused with EPERM on ext4 when the file has a set-id bit, changes
    /// nothing here and succeeds (taking the bits for it would let any user strip another's
    /// setuid program).
    static func isChownOfNeither(_ toSet: Int32, _ st: stat, _ caller: Caller) -> Bool {
        let attributes = FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID | FUSE_SET_ATTR_SIZE | FUSE_SET_ATTR_ATIME
            | FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_ATIME_NOW | FUSE_SET_ATTR_MTIME_NOW
        guard toSet & attributes == 0, setIDBitsToKill(st) != 0 else { return false }
        return caller.uid == st.st_uid || holdsCapability(caller, capFOwner)
    }

    /// chmod of the inode through its own (`O_PATH`) descriptor; through `/proc` only on a
    /// kernel without fchmodat2 (before 6.6).
    static func chmod(_ inode: Node, _ mode: mode_t) throws(SystemError) {
        do { return try inode.descriptor.chmodSelf(mode: mode) } catch {
            guard error.errno == .ENOSYS else { throw error }
        }
        try Descriptor.cwd.chmod(inode.procPath, mode: mode)
    }

    /// `killSetIDBits(_:)` for an inode of a setattr (a chown, most often: tar chowns every file
    /// it writes), given its backing attributes `st` taken after the change (the setattr's
    /// reply reuses them when nothing changed). The file is neither opened nor changed when it
    /// has no bit to lose: opening it through `/proc` for the check cost three system calls and
    /// a path walk per chown. Returns whether it changed the mode.
    static func killSetIDBits(of inode: Node, _ st: stat) -> Bool {
        let kill = setIDBitsToKill(st)
        guard kill != 0 else { return false }
        do throws(SystemError) { try chmod(inode, st.st_mode & 0o7777 & ~kill) } catch {
            logger.error("cannot clear the setuid/setgid bits of a changed file: \(error.errno)")
            return false
        }
        return true
    }

    func mkdir(_ dir: Node, _ name: String, mode: mode_t, caller: Caller) throws(FSError) -> fuse_entry_param {
        evictions.drain()
        let backingName = try backing(dir, name, creating: true)
        guard names != nil else {
            try system { () throws(SystemError) in try dir.descriptor.mkdir(backingName, mode: mode & 0o7777) }
            settle(dir, backingName, mode: mode, isDirectory: true, caller: caller)
            return try entry(dir, backingName)
        }
        // Made under a hidden temporary name with its id inside, then renamed into place
        // (RENAME_NOREPLACE gives mkdir's EEXIST): no crash leaves a visible directory without
        // an id, whose entries could never be named.
        let temp = ".cmkfs-mkdir-" + hex((try? SecureRandom.bytes(8)) ?? [UInt8(truncatingIfNeeded: getpid())])
        try system { () throws(SystemError) in try dir.descriptor.mkdir(temp, mode: mode & 0o7777) }
        var failure: FSError?
        do {
            let fd = try dir.descriptor.openat(temp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            // The id file could not be written (logged): an I/O failure, whatever the call said.
            do { try DirectoryID.create(directoryFD: fd.rawValue) } catch { failure = .posix(EIO); Self.logger.error("mkdir: \(error)") }
        } catch { failure = .system(error) }
        if failure == nil {
            settle(dir, temp, mode: mode, isDirectory: true, caller: caller)
            do { try dir.descriptor.rename(temp, to: backingName, in: dir.descriptor, flags: Descriptor.noReplace) } catch {
                failure = .system(error)
            }
        }
        if let failure {
            try? dir.descriptor.unlink(temp + "/" + NameCodec.directoryIDFile)
            try? dir.descriptor.unlink(temp, flags: AT_REMOVEDIR)
            throw failure
        }
        return try entry(dir, backingName)
    }

    func rmdir(_ dir: Node, _ name: String) throws(FSError) {
        defer { auditNames.namespaceChanged() }
        let backingName = try backing(dir, name)
        guard let names else {
            try system { () throws(SystemError) in try dir.descriptor.unlink(backingName, flags: AT_REMOVEDIR) }
            return
        }
        let emptied = try emptyDirectoryIDFile(dir, backingName)
        do { try dir.descriptor.unlink(backingName, flags: AT_REMOVEDIR) } catch {
            emptied.restoreID()
            throw .system(error)
        }
        names.forget(backingName)
        names.entryGone(dir, name)
        names.directoriesChanged()
    }

    /// Removes the id file of the backing directory `name` in `dir` if that file is all it
    /// holds, and returns the directory (open while the result lives) with the id it had, to put
    /// back if the removal or replacement that needed this fails. ENOTEMPTY otherwise. The kernel
    /// holds the directory's lock for an rmdir or a rename onto it, so no entry can appear in it
    /// meanwhile.
    func emptyDirectoryIDFile(_ dir: Node, _ name: String) throws(FSError) -> EmptiedDirectory {
        let fd = try system { () throws(SystemError) in try dir.descriptor.openat(name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
        // Whatever stopped the listing, the directory cannot be shown empty: EIO, as before.
        guard let listed = try? fd.descriptor.entries() else { throw .posix(EIO) }
        guard listed.allSatisfy({ [".", "..", NameCodec.directoryIDFile].contains($0.name) }) else {
            throw .posix(ENOTEMPTY)
        }
        let id = try? DirectoryID.read(directoryFD: fd.rawValue)
        try? fd.descriptor.unlink(NameCodec.directoryIDFile)
        return EmptiedDirectory(fd: fd, id: id)
    }

    /// Removing a file's last link also removes its key rows (in the next batch, see
    /// `PendingForgets`): the DEK is gone with the file. An open handle keeps its unwrapped key
    /// until it is closed.
    func unlink(_ dir: Node, _ name: String) throws(FSError) {
        let backingName = try backing(dir, name)
        try namespaceLock.withLock { _ throws(FSError) in
            // One lstat for the three questions: the kernel holds the directory locked and the
            // namespace lock keeps our own renames and links out, so the entry stays as it is.
            let found = lstat(dir, backingName)
            let st = found ?? stat()
            let file = found == nil ? nil : bindsNames ? regularFileID(dir, backingName, st: st)
                : lastLinkFileID(dir, backingName, st: st).map { ($0, true) }
            let longTarget = found == nil ? nil : lastLinkLongTarget(dir, backingName, st: st)
            // A file's last link: held open across the unlink, so that its blocks are freed
            // after the reply, not inside it (`PendingEvictions`).
            var held: FileDescriptor?
            if found != nil, (st.st_mode & S_IFMT) == S_IFREG, st.st_nlink == 1 {
                held = try? dir.descriptor.openat(backingName, OpenFlags.path | O_NOFOLLOW | O_CLOEXEC)
            }
            try system { () throws(SystemError) in try dir.descriptor.unlink(backingName) }
            if let fd = held.take() { evictions.hold(fd) }
            // Only the unlinked object's audit path can have been this name (AuditNames).
            if found != nil, let inode = inodes.inode(for: InodeIdentity(st)) { auditNames.entryRemoved(inode) }
            if let file, file.last { forgets.add(file.id) }
            // Another link remains: only this entry's binding goes.
            if let file, !file.last, let link = entryLink(dir, backingName) {
                try? changeBindings(add: [], remove: [(file.id, link)])
                entryRemoved(InodeIdentity(st), link)
            }
            if let longTarget { names?.forgetTarget(longTarget) }
            names?.forget(backingName)
            names?.entryGone(dir, name)
        }
    }

    func rename(_ dir: Node, _ plainName: String, _ newDir: Node, _ plainNewName: String, flags: UInt32) throws(FSError) {
        evictions.drain()
        defer { auditNames.namespaceChanged() }
        let name = try backing(dir, plainName)
        let newName = try backing(newDir, plainNewName, creating: true)
        try namespaceLock.withLock { _ throws(FSError) in
            var replaced: FileID?, replacedTarget: String?
            let src = lstat(dir, name), dst = lstat(newDir, newName)
            // Both exist and are not one inode (a rename onto another name of itself changes nothing).
            var distinct = false
            if let src, let dst { distinct = !(src.st_ino == dst.st_ino && src.st_dev == dst.st_dev) }
            if flags & Descriptor.exchange == 0, distinct {
                replaced = lastLinkFileID(newDir, newName)
                replacedTarget = lastLinkLongTarget(newDir, newName)
            }
            // A directory moved onto an empty directory replaces it (POSIX): the target's id
            // file is all that keeps its backing directory from being empty, so it goes first
            // and comes back if the rename fails.
            var victim: EmptiedDirectory?
            if names != nil, flags & (Descriptor.exchange | Descriptor.noReplace) == 0, distinct, let src, let dst,
               (src.st_mode & S_IFMT) == S_IFDIR, (dst.st_mode & S_IFMT) == S_IFDIR {
                victim = try emptyDirectoryIDFile(newDir, newName)
            }
            let bindings = renameBindings(dir, name, src: src, newDir, newName, dst: dst,
                                          exchange: flags & Descriptor.exchange != 0)
            if !bindings.add.isEmpty { try changeBindings(add: bindings.add) }
            do throws(SystemError) { try dir.descriptor.rename(name, to: newName, in: newDir.descriptor, flags: flags) } catch {
                victim?.restoreID()
                try? changeBindings(add: [], remove: bindings.add)
                throw .system(error)
            }
            try? changeBindings(add: [], remove: bindings.remove)
            if let (identity, link) = bindings.replaced { entryRemoved(identity, link) }
            for (identity, link) in bindings.moved {
                inodes.inode(for: identity)?.noteEntry(link, verified: true)
            }
            if let replaced { forgets.add(replaced) }
            if let replacedTarget { names?.forgetTarget(replacedTarget) }
            if let names {
                // An exchange keeps both names; a move frees the old one. A directory's backing
                // name changed: cached audit paths may be stale.
                if flags & Descriptor.exchange == 0 && name != newName {
                    names.forget(name)
                    names.entryGone(dir, plainName)
                }
                if [src, dst].contains(where: { $0.map { ($0.st_mode & S_IFMT) == S_IFDIR } ?? false }) {
                    names.directoriesChanged()
                }
            }
        }
    }

    func link(_ inode: Node, _ newDir: Node, _ plainNewName: String) throws(FSError) -> fuse_entry_param {
        evictions.drain()
        defer { auditNames.namespaceChanged() }
        let newName = try backing(newDir, plainNewName, creating: true)
        try namespaceLock.withLock { _ throws(FSError) in
            // The new entry's binding first: a crash leaves a stale row, never an unbound entry.
            var bound: (FileID, EntryLink)?
            // An existing name (the kernel looked first; the directory is locked) keeps its row.
            if lstat(newDir, newName) != nil { throw .posix(EEXIST) }
            if bindsNames, inode.kind == S_IFREG, let link = entryLink(newDir, newName) {
                var id: FileID?
                if let fd = try? Descriptor.cwd.openat(inode.procPath, O_RDONLY | O_CLOEXEC | OpenFlags.noAccessTime) {
                    id = try? ContentFile.readFileID(fd: fd.rawValue)
                }
                if let id {
                    try changeBindings(add: [(id, link)])
                    bound = (id, link)
                }
            }
            // Through /proc with AT_SYMLINK_FOLLOW: links the very object the descriptor names.
            do throws(SystemError) { try Descriptor.cwd.link(inode.procPath, to: newName, in: newDir.descriptor, flags: AT_SYMLINK_FOLLOW) } catch {
                if let bound { try? changeBindings(add: [], remove: [bound]) }
                throw .system(error)
            }
        }
        return try entry(newDir, newName)
    }

    func symlink(target plainTarget: String, _ dir: Node, _ plainName: String, caller: Caller) throws(FSError) -> fuse_entry_param {
        evictions.drain()
        guard plainTarget != LowLevelCallbacks.invalidName else { throw .posix(EILSEQ) }
        let name = try backing(dir, plainName, creating: true)
        var target = plainTarget
        if let names { target = try names.storedTarget(plainTarget) }
        do { try dir.descriptor.symlink(name, target: target) } catch {
            names?.forgetTarget(target)
            throw .system(error)
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

    /// The plaintext target of the symlink open at `fd` (`O_PATH`).
    func target(ofSymlink fd: Int32) throws(FSError) -> String {
        let bytes = try system { () throws(SystemError) in try Descriptor(rawValue: fd).readlink("") }
        let stored = String(decoding: bytes, as: UTF8.self)
        guard let names else { return stored }
        return try names.plainTarget(stored)
    }

    /// FIFOs, sockets and device nodes are made as they are in the backing tree; a regular file
    /// gets a key like `create`. A device node needs CAP_MKNOD, as on ext4 (the kernel checks it
    /// too); the mount is `nodev`, so no node is ever opened as a device through cmkfs
    /// (docs/on-disk-format.md, "Special files").
    func mknod(_ dir: Node, _ plainName: String, mode: mode_t, rdev: dev_t, caller: Caller) throws(FSError) -> fuse_entry_param {
        evictions.drain()
        let type = mode & S_IFMT
        guard [S_IFIFO, S_IFSOCK, S_IFREG, S_IFCHR, S_IFBLK].contains(type) else { throw .posix(EINVAL) }
        let device = type == S_IFCHR || type == S_IFBLK
        if device && !Self.mayMakeDevices(caller) { throw .posix(EPERM) }
        let name = try backing(dir, plainName, creating: true)
        guard type == S_IFREG else {
            try system { () throws(SystemError) in try dir.descriptor.mknod(name, mode: mode, device: device ? rdev : 0) }
            settle(dir, name, mode: mode, isDirectory: false, caller: caller)
            return try entry(dir, name)
        }
        var use = KeyUse("create", caller: caller)
        let file: OpenFile, bound: EntryLink?, attributes: stat?
        do { (file, bound, attributes) = try createFile(dir, name, mode: mode, caller: caller, use: &use) } catch {
            audit("create", use, failure: error, path: mountPath(dir, plainName), caller: caller, detail: "mknod")
            throw error
        }
        defer { openFiles.release(file) }
        do { try audit("create", use, path: mountPath(dir, plainName), caller: caller, detail: "mknod") } catch {
            try? dir.descriptor.unlink(name)
            try? volume.forgetFile(file.file.fileID)
            throw error
        }
        return try entry(for: file, link: entryLink(dir, name), bound: bound, attributes: attributes)
    }

    /// Whether the calling process holds CAP_MKNOD.
    static func mayMakeDevices(_ caller: Caller) -> Bool { holdsCapability(caller, 27) }

    /// CAP_FSETID: keeps set-id bits across writes and truncations.
    static let capFSetID: UInt64 = 4
    /// CAP_FOWNER: acts as the owner of any file.
    static let capFOwner: UInt64 = 3

    /// Whether the calling process holds capability number `capability` (its effective set in
    /// /proc; uid 0 when the kernel did not say which process called).
    static func holdsCapability(_ caller: Caller, _ capability: UInt64) -> Bool {
        guard caller.pid > 0, let status = try? String(contentsOfFile: "/proc/\(caller.pid)/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("CapEff:") }),
              let caps = UInt64(line.dropFirst("CapEff:".count).trimmingCharacters(in: .whitespaces), radix: 16)
        else { return caller.uid == 0 }
        return caps & (1 << capability) != 0
    }

    func statfs(_ inode: Node) throws(FSError) -> statvfs {
        evictions.drain()
        var st = try system { () throws(SystemError) in try inode.descriptor.statfs() }
        // Names up to Linux's 255 bytes work even when the backing filesystem's limit is lower
        // than their encoding: long encodings are stored by hash (NameCodec).
        st.f_namemax = UInt(NameCodec.maxNameLength)
        return st
    }
}

/// A backing directory whose id file was taken out so the directory could be removed or
/// replaced, held open so the id can be put back if that fails.
final class EmptiedDirectory {
    let fd: FileDescriptor
    let id: [UInt8]?

    init(fd: consuming FileDescriptor, id: [UInt8]?) {
        self.fd = fd
        self.id = id
    }

    /// Writes the id file back (the removal or rename failed).
    func restoreID() {
        if let id { _ = try? DirectoryID.create(directoryFD: fd.rawValue, id: id) }
    }
}

// UTIME_NOW and UTIME_OMIT are macros over shifts that Swift does not import (<sys/stat.h>).
let utimeNow = (1 << 30) - 1
let utimeOmit = (1 << 30) - 2
