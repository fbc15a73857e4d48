import Logging
import Glibc
import CFuse3
import CMKCrypto
import CMKFormat

extension FileSystem {
    func open(_ inode: Node, flags: Int32, caller: Caller) -> (UInt64, Int32) {
        var use = KeyUse("open", caller: caller)
        let (file, rc) = acquire(inode, use: &use)
        let arc = audit("open", use, rc: rc, path: mountPath(ofDescriptor: inode.fd), caller: caller,
                        detail: flags & O_TRUNC != 0 ? "O_TRUNC" : nil)
        guard let file else { return (0, rc) }
        if arc != 0 { openFiles.release(file, cache: cache); return (0, arc) }
        let label = "file \(file.file.fileID)"
        if flags & O_TRUNC != 0 {
            let trc = truncate(file, to: 0, label: label)
            if trc != 0 { openFiles.release(file, cache: cache); return (0, trc) }
        }
        // With the writeback cache the kernel places O_APPEND writes itself, and sends cached
        // pages through whichever writable handle of the inode it picks: a handle must not
        // move them to the end of the file.
        return (handles.add(Handle(file: file, append: !writebackCache && flags & O_APPEND != 0, path: label)), 0)
    }

    /// create(2) with O_CREAT: a new file with a new key, its entry and an open handle.
    func create(_ dir: Node, _ plainName: String, mode: mode_t, flags: Int32, caller: Caller) -> (fuse_entry_param, UInt64, Int32) {
        let (name, nrc) = backing(dir, plainName, creating: true)
        guard nrc == 0 else { return (fuse_entry_param(), 0, nrc) }
        var use = KeyUse("create", caller: caller)
        let (file, rc) = createFile(dir, name, mode: mode, caller: caller, use: &use)
        let arc = audit("create", use, rc: rc, path: mountPath(dir, plainName), caller: caller,
                        detail: rc == 0 ? "new data key generated and wrapped" : nil)
        guard let file else { return (fuse_entry_param(), 0, rc) }
        if arc != 0 {
            openFiles.release(file, cache: cache)
            unlinkat(dir.fd, name, 0)
            try? volume.forgetFile(file.file.fileID)
            return (fuse_entry_param(), 0, arc)
        }
        let (e, erc) = entry(for: file, link: entryLink(dir, name))
        guard erc == 0 else { openFiles.release(file, cache: cache); return (e, 0, erc) }
        return (e, handles.add(Handle(file: file, append: !writebackCache && flags & O_APPEND != 0, path: "file \(file.file.fileID)")), 0)
    }

    /// The entry of a file just created, found through its open descriptor (not its name, which
    /// another process could already have renamed).
    func entry(for file: OpenFile, link: EntryLink? = nil) -> (fuse_entry_param, Int32) {
        var e = fuse_entry_param()
        let fd = openAt("/proc/self/fd/\(file.fd)", relativeTo: AT_FDCWD, flags: CMKFS_O_PATH | O_CLOEXEC)
        guard fd >= 0 else { return (e, errno) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { let err = errno; close(fd); return (e, err) }
        e.ino = inodes.remember(fd: fd, identity: InodeIdentity(st), kind: S_IFREG)
        if let inode = inodes.get(e.ino) { noteEntry(inode, link) }
        present(&st)
        e.attr = st
        e.attr_timeout = Self.cacheSeconds
        e.entry_timeout = Self.cacheSeconds
        return (e, 0)
    }

    func release(_ fh: UInt64) -> Int32 {
        guard let handle = handles.remove(fh) else { return EBADF }
        openFiles.release(handle.file, cache: cache)
        return 0
    }

    /// Decrypts up to `size` bytes at `offset` into a pooled buffer and hands them to `reply`
    /// after the file's lock is released (never reply to the kernel while holding a lock).
    func read(_ fh: UInt64, size: Int, at offset: Int, reply: (UnsafeRawBufferPointer) -> Void) -> Int32 {
        guard let handle = handles.get(fh) else { return EBADF }
        let file = handle.file
        return scratch.with { s -> Int32 in
            let out = s.output(size)
            do {
                let n = try file.content.withReadLock { () throws(FileOpError) -> Int in
                    let key = try file.key()
                    return try content { () throws(ContentError) in
                        try file.file.read(into: out, at: offset, size: file.size, key: key, scratch: s)
                    }
                }
                reply(UnsafeRawBufferPointer(rebasing: out[0..<n]))
                return 0
            } catch let error as FileOpError {
                Self.logFailure(error.errno, "read \(handle.path) at \(offset): \(error)")
                _ = audit("read-denied", KeyUse(fileID: file.file.fileID, key: file.content.withReadLock { file.lease.keyRef }),
                          rc: error.errno, error: "\(error)", path: mountPath(ofDescriptor: file.fd), caller: nil,
                          detail: "read at offset \(offset)")
                return error.errno
            } catch {
                return EIO
            }
        }
    }

    func write(_ fh: UInt64, _ data: UnsafeRawBufferPointer, at offset: Int) -> (Int, Int32) {
        guard let handle = handles.get(fh) else { return (0, EBADF) }
        let file = handle.file
        do {
            try file.content.withWriteLock { () throws(FileOpError) in
                let key = try file.key()
                let at = handle.append ? file.size : offset
                file.size = try content { () throws(ContentError) in
                    try scratch.with { s throws(ContentError) in
                        try file.file.write(data, at: at, size: file.size, key: key, scratch: s)
                    }
                }
            }
            if KernelChannel.currentRequestKillsSetIDBits, Self.killSetIDBits(file.fd) {
                // The kernel keeps the mode it cached; a WRITE reply cannot carry a new one.
                if let session = session.withLock({ $0 }), let node = inodes.node(for: file.identity) {
                    fuse_lowlevel_notify_inval_inode(session.raw, node, -1, 0)
                }
            }
            return (data.count, 0)
        } catch {
            Self.logFailure(error.errno, "write \(handle.path) at \(offset): \(error)")
            _ = audit("write-denied", KeyUse(fileID: file.file.fileID, key: file.content.withReadLock { file.lease.keyRef }),
                      rc: error.errno, error: "\(error)", path: mountPath(ofDescriptor: file.fd), caller: nil,
                      detail: "write at offset \(offset)")
            return (0, error.errno)
        }
    }

    /// What the kernel does for a local filesystem when a caller without CAP_FSETID writes,
    /// truncates or chowns a file: setuid goes, and setgid when group-execute is set (a setgid
    /// file without it is a mandatory-locking mark, left alone). With FUSE_HANDLE_KILLPRIV_V2 the
    /// kernel leaves this to the daemon (`KernelChannel`); the daemon writes the backing file as
    /// root, whose writes never clear the bits by themselves.
    /// Returns whether it changed the mode.
    @discardableResult
    static func killSetIDBits(_ fd: Int32) -> Bool {
        var st = stat()
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { return false }
        var kill = st.st_mode & S_ISUID
        if st.st_mode & S_IXGRP != 0 { kill |= st.st_mode & S_ISGID }
        guard kill != 0 else { return false }
        guard fchmod(fd, st.st_mode & 0o7777 & ~kill) == 0 else {
            logger.error("cannot clear the setuid/setgid bits of a written file: \(String(cString: strerror(errno)))")
            return false
        }
        return true
    }

    /// truncate(2) and ftruncate(2).
    func truncate(_ inode: Node, fh: UInt64?, to size: Int, caller: Caller) -> Int32 {
        guard size >= 0 else { return EINVAL }
        if let fh, let handle = handles.get(fh) {
            let file = handle.file
            let use = KeyUse(fileID: file.file.fileID, key: file.content.withReadLock { file.lease.keyRef })
            let arc = audit("truncate", use, rc: 0, path: mountPath(ofDescriptor: file.fd), caller: caller, detail: "to \(size) bytes (open handle)")
            if arc != 0 { return arc }
            return truncate(file, to: size, label: handle.path)
        }
        var use = KeyUse("truncate", caller: caller)
        let (file, rc) = acquire(inode, use: &use)
        let arc = audit("truncate", use, rc: rc, path: mountPath(ofDescriptor: inode.fd), caller: caller, detail: "to \(size) bytes")
        guard let file else { return rc }
        defer { openFiles.release(file, cache: cache) }
        if arc != 0 { return arc }
        return truncate(file, to: size, label: "file \(file.file.fileID)")
    }

    func truncate(_ file: OpenFile, to newSize: Int, label: String) -> Int32 {
        do {
            try file.content.withWriteLock { () throws(FileOpError) in
                try resize(file, to: newSize)
            }
            return 0
        } catch {
            Self.logFailure(error.errno, "truncate \(label) to \(newSize): \(error)")
            return error.errno
        }
    }

    /// Changes the plaintext size; call with `content` held exclusively.
    private func resize(_ file: OpenFile, to newSize: Int) throws(FileOpError) {
        let key = try file.key()
        try content { () throws(ContentError) in
            try scratch.with { s throws(ContentError) in
                try file.file.truncate(from: file.size, to: newSize, key: key, scratch: s)
            }
        }
        file.size = newSize
    }

    /// fsync(2)/fdatasync(2): the content, then the key rows, so a synced file is never left
    /// without its key after a power cut.
    func fsync(_ fh: UInt64, dataOnly: Bool) -> Int32 {
        guard let handle = handles.get(fh) else { return EBADF }
        let rc = dataOnly ? fdatasync(handle.file.fd) : Glibc.fsync(handle.file.fd)
        if rc != 0 { return errno }
        do { try volume.metadata.makeDurable() } catch {
            Self.logger.error("fsync \(handle.path): metadata: \(error)")
            return EIO
        }
        return 0
    }

    /// fallocate(2): reserving space is honest (the backing range is allocated and reads as a
    /// hole); punching holes and collapsing ranges are not offered.
    func fallocate(_ fh: UInt64, mode: Int32, offset: Int, length: Int) -> Int32 {
        guard let handle = handles.get(fh) else { return EBADF }
        guard offset >= 0, length > 0 else { return EINVAL }
        guard mode & ~FALLOC_FL_KEEP_SIZE == 0 else { return EOPNOTSUPP }
        guard volume.layout.fits(offset: offset, length: length) else { return EFBIG }
        let file = handle.file
        let layout = volume.layout
        do {
            return try file.content.withWriteLock { () throws(FileOpError) -> Int32 in
                let end = offset + length
                let diskStart = layout.diskOffset(ofBlock: offset / layout.blockSize)
                let diskEnd = layout.backingSize(plaintextSize: max(end, file.size))
                if cmkfs_fallocate(file.fd, FALLOC_FL_KEEP_SIZE, off_t(diskStart), off_t(diskEnd - diskStart)) != 0 {
                    return errno
                }
                if mode & FALLOC_FL_KEEP_SIZE == 0 && end > file.size { try resize(file, to: end) }
                return 0
            }
        } catch {
            Self.logFailure(error.errno, "fallocate \(handle.path): \(error)")
            return error.errno
        }
    }
}

/// Runs a content operation, reporting its failure as a `FileOpError`.
func content<R>(_ body: () throws(ContentError) -> R) throws(FileOpError) -> R {
    do { return try body() } catch { throw .content(error) }
}
