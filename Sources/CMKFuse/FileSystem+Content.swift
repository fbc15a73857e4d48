import Logging
import Glibc
import CFuse3
import CMKCrypto
import CMKFormat
import CMKSystem
import CMKMetrics

extension FileSystem {
    /// open(2) of the kernel's node `node`. A regular file anchored by a file handle is opened
    /// straight from it (`Inode.open(mountFD:flags:)`: one system call where the `O_PATH`
    /// descriptor of `withNode` and a reopen through `/proc/self/fd` took three); anything else,
    /// or a direct open that failed, goes the general way, which gives the failure its errno
    /// (ESTALE for an object that is gone) and its audit record.
    func open(node: UInt64, flags: Int32, caller: Caller) throws(FSError) -> UInt64 {
        if let inode = inodes.get(node), inode.kind == S_IFREG {
            // An inode whose id an open or the create read already has no header to read (the id
            // never changes; a rekey keeps it), so no O_NOATIME to set and clear around it.
            let known = inode.fileID
            guard let fd = try? inode.open(mountFD: rootFD, flags: known == nil ? Self.acquireFlags : O_RDWR) else {
                return try withNode(node) { (n: Node) throws(FSError) -> UInt64 in try open(n, flags: flags, caller: caller) }
            }
            var use = KeyUse("open", caller: caller)
            let file: OpenFile
            do { file = try acquire(inode, opened: fd, knownFileID: known, use: &use) } catch {
                // `fd` is closed by now: the path comes from a descriptor of the node's own.
                let path = (try? withNode(node) { (n: Node) throws(FSError) -> String? in mountPath(n) }) ?? nil
                audit("open", use, failure: error, path: path, caller: caller, detail: flags & O_TRUNC != 0 ? "O_TRUNC" : nil)
                throw error
            }
            // The open file's descriptor stays open while `file` is held.
            return try opened(file, use, at: Node(inode: inode, fd: file.fd), flags: flags, caller: caller)
        }
        return try withNode(node) { (n: Node) throws(FSError) -> UInt64 in try open(n, flags: flags, caller: caller) }
    }

    func open(_ inode: Node, flags: Int32, caller: Caller) throws(FSError) -> UInt64 {
        var use = KeyUse("open", caller: caller)
        let file: OpenFile
        do { file = try acquire(inode, use: &use) } catch {
            audit("open", use, failure: error, path: mountPath(inode), caller: caller,
                  detail: flags & O_TRUNC != 0 ? "O_TRUNC" : nil)
            throw error
        }
        return try opened(file, use, at: inode, flags: flags, caller: caller)
    }

    /// The rest of an open once `file` holds the key: its audit record (before the reply), the
    /// O_TRUNC, the handle.
    private func opened(_ file: OpenFile, _ use: KeyUse, at inode: Node, flags: Int32, caller: Caller) throws(FSError) -> UInt64 {
        do {
            try audit("open", use, path: mountPath(inode), caller: caller, detail: flags & O_TRUNC != 0 ? "O_TRUNC" : nil)
            if flags & O_TRUNC != 0 {
                try truncate(file, to: 0, label: "file \(file.file.fileID)")
                // A truncation by a caller without CAP_FSETID takes the set-id bits, as any
                // truncate does (the kernel flags the OPEN: FUSE_OPEN_KILL_SUIDGID).
                if KernelChannel.currentRequestKillsSetIDBits, Self.killSetIDBits(file.fd) { modeChangedBehindTheKernel(file) }
            }
        } catch {
            openFiles.release(file)
            throw error
        }
        // With the writeback cache the kernel places O_APPEND writes itself, and sends cached
        // pages through whichever writable handle of the inode it picks: a handle must not
        // move them to the end of the file.
        Metrics.shared.opens.add()
        return openFiles.addHandle(Handle(file: file, append: !writebackCache && flags & O_APPEND != 0))
    }

    /// create(2) with O_CREAT: a new file with a new key, its entry and an open handle.
    func create(_ dir: Node, _ plainName: String, mode: mode_t, flags: Int32, caller: Caller) throws(FSError) -> (fuse_entry_param, UInt64) {
        // Space freed by the unlinks answered before is free now (`PendingEvictions`), as below.
        evictions.drain()
        let name = try backing(dir, plainName, creating: true)
        var use = KeyUse("create", caller: caller)
        let file: OpenFile, bound: EntryLink?, attributes: stat?
        do { (file, bound, attributes) = try createFile(dir, name, mode: mode, caller: caller, use: &use) } catch {
            audit("create", use, failure: error, path: mountPath(dir, plainName), caller: caller)
            throw error
        }
        do {
            try audit("create", use, path: mountPath(dir, plainName), caller: caller, detail: "new data key generated and wrapped")
        } catch {
            openFiles.release(file)
            try? dir.descriptor.unlink(name)
            try? volume.forgetFile(file.file.fileID)
            throw error
        }
        let e: fuse_entry_param
        do { e = try entry(for: file, link: entryLink(dir, name), bound: bound, attributes: attributes) } catch { openFiles.release(file); throw error }
        Metrics.shared.creates.add()
        return (e, openFiles.addHandle(Handle(file: file, append: !writebackCache && flags & O_APPEND != 0)))
    }

    /// The entry of a file just created, found through its open descriptor (not its name, which
    /// another process could already have renamed). `bound`: the entry whose binding row the
    /// create committed with the key, so the first open has nothing to check. `attributes`: the
    /// file's backing attributes, when the caller took them since its last change (a create's,
    /// taken right after the link; the file is not reachable through the mount before this
    /// reply, so nothing changed it since).
    func entry(for file: OpenFile, link: EntryLink? = nil, bound: EntryLink? = nil, attributes: stat? = nil) throws(FSError) -> fuse_entry_param {
        var e = fuse_entry_param()
        var st: stat
        if let attributes { st = attributes } else {
            st = try system { () throws(SystemError) in try Descriptor(rawValue: file.fd).fstat() }
        }
        // The inode's file handle is taken from the open descriptor; only a backing filesystem
        // without handles needs a descriptor of the inode's own (through /proc).
        if let node = inodes.remember(handleOf: file.fd, identity: InodeIdentity(st), kind: S_IFREG) {
            e.ino = node
        } else {
            let fd = try system { () throws(SystemError) in try Descriptor.cwd.openat("/proc/self/fd/\(file.fd)", OpenFlags.path | O_CLOEXEC) }
            e.ino = inodes.remember(fd: fd, identity: InodeIdentity(st), kind: S_IFREG)
        }
        if let inode = inodes.get(e.ino) {
            noteEntry(inode, link, verified: bound != nil && bound == link)
            inode.noteFileID(file.file.fileID)
        }
        present(&st)
        e.attr = st
        e.attr_timeout = Self.cacheSeconds
        e.entry_timeout = Self.cacheSeconds
        return e
    }

    func release(_ fh: UInt64) throws(FSError) {
        try openFiles.closeHandle(fh)
    }

    /// Decrypts up to `size` bytes at `offset` into a pooled buffer and hands them to `reply`
    /// after the file's lock is released (never reply to the kernel while holding a lock).
    func read(_ fh: UInt64, size: Int, at offset: Int, reply: (UnsafeRawBufferPointer) -> Void) throws(FSError) {
        guard let handle = openFiles.handle(fh) else { throw .posix(EBADF) }
        let file = handle.file
        try scratch.with { s throws(FSError) in
            let out = s.output(size)
            do throws(FSError) {
                let n = try file.content.withReadLock { () throws(FSError) -> Int in
                    let key = try file.key()
                    return try content { () throws(ContentError) in
                        try file.file.read(into: out, at: offset, size: file.size, key: key, scratch: s)
                    }
                }
                reply(UnsafeRawBufferPointer(rebasing: out[0..<n]))
                Metrics.shared.bytesRead.add(UInt64(n))
            } catch {
                Self.logFailure(error.errno, "read \(handle.path) at \(offset): \(error)")
                audit("read-denied", KeyUse(fileID: file.file.fileID, key: file.content.withReadLock { file.lease.keyRef }),
                      failure: error, error: "\(error)", path: mountPath(ofDescriptor: file.fd), caller: nil,
                      detail: "read at offset \(offset)")
                throw error
            }
        }
    }

    /// Encrypts `data` into the file at `offset` (its end for an O_APPEND handle); returns the
    /// bytes written.
    func write(_ fh: UInt64, _ data: UnsafeRawBufferPointer, at offset: Int) throws(FSError) -> Int {
        evictions.drain()
        guard let handle = openFiles.handle(fh) else { throw .posix(EBADF) }
        let file = handle.file
        do {
            try file.content.withWriteLock { () throws(FSError) in
                let key = try file.key()
                let at = handle.append ? file.size : offset
                file.size = try content { () throws(ContentError) in
                    try scratch.with { s throws(ContentError) in
                        try file.file.write(data, at: at, size: file.size, key: key, scratch: s)
                    }
                }
            }
        } catch {
            Self.logFailure(error.errno, "write \(handle.path) at \(offset): \(error)")
            audit("write-denied", KeyUse(fileID: file.file.fileID, key: file.content.withReadLock { file.lease.keyRef }),
                  failure: error, error: "\(error)", path: mountPath(ofDescriptor: file.fd), caller: nil,
                  detail: "write at offset \(offset)")
            throw error
        }
        Metrics.shared.bytesWritten.add(UInt64(data.count))
        if KernelChannel.currentRequestKillsSetIDBits, Self.killSetIDBits(file.fd) {
            // The kernel keeps the mode it cached; a WRITE reply cannot carry a new one.
            modeChangedBehindTheKernel(file)
        }
        return data.count
    }

    /// Tells the kernel to drop the attributes it cached for `file`'s inode: the daemon took its
    /// set-id bits while answering a request whose reply carries no attributes (WRITE, OPEN,
    /// FALLOCATE), and the kernel would otherwise go on checking permissions and exec against
    /// the old mode until its attribute timeout.
    func modeChangedBehindTheKernel(_ file: OpenFile) {
        if let session = session.withLock({ $0 }), let node = inodes.node(for: file.identity) {
            fuse_lowlevel_notify_inval_inode(session.raw, node, -1, 0)
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
        let file = Descriptor(rawValue: fd)
        guard let st = try? file.fstat() else { return false }
        let kill = setIDBitsToKill(st)
        guard kill != 0 else { return false }
        do throws(SystemError) { try file.fchmod(st.st_mode & 0o7777 & ~kill) } catch {
            logger.error("cannot clear the setuid/setgid bits of a written file: \(error.errno)")
            return false
        }
        return true
    }

    /// The set-id bits a write, truncate or chown takes from the regular file `st` describes
    /// (see `killSetIDBits(_:)`); 0 when none.
    static func setIDBitsToKill(_ st: stat) -> mode_t {
        guard (st.st_mode & S_IFMT) == S_IFREG else { return 0 }
        var kill = st.st_mode & S_ISUID
        if st.st_mode & S_IXGRP != 0 { kill |= st.st_mode & S_ISGID }
        return kill
    }

    /// truncate(2) and ftruncate(2).
    func truncate(_ inode: Node, fh: UInt64?, to size: Int, caller: Caller) throws(FSError) {
        guard size >= 0 else { throw .posix(EINVAL) }
        if let fh, let handle = openFiles.handle(fh) {
            let file = handle.file
            let use = KeyUse(fileID: file.file.fileID, key: file.content.withReadLock { file.lease.keyRef })
            try audit("truncate", use, path: mountPath(ofDescriptor: file.fd), caller: caller, detail: "to \(size) bytes (open handle)")
            return try truncate(file, to: size, label: handle.path)
        }
        var use = KeyUse("truncate", caller: caller)
        let file: OpenFile
        do { file = try acquire(inode, use: &use) } catch {
            audit("truncate", use, failure: error, path: mountPath(inode), caller: caller, detail: "to \(size) bytes")
            throw error
        }
        defer { openFiles.release(file) }
        try audit("truncate", use, path: mountPath(inode), caller: caller, detail: "to \(size) bytes")
        try truncate(file, to: size, label: "file \(file.file.fileID)")
    }

    func truncate(_ file: OpenFile, to newSize: Int, label: String) throws(FSError) {
        do {
            try file.content.withWriteLock { () throws(FSError) in
                try resize(file, to: newSize)
            }
        } catch {
            Self.logFailure(error.errno, "truncate \(label) to \(newSize): \(error)")
            throw error
        }
    }

    /// Changes the plaintext size; call with `content` held exclusively.
    private func resize(_ file: OpenFile, to newSize: Int) throws(FSError) {
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
    func fsync(_ fh: UInt64, dataOnly: Bool) throws(FSError) {
        guard let handle = openFiles.handle(fh) else { throw .posix(EBADF) }
        let file = Descriptor(rawValue: handle.file.fd)
        try system { () throws(SystemError) in if dataOnly { try file.fdatasync() } else { try file.fsync() } }
        do { try volume.metadata.makeDurable() } catch {
            Self.logger.error("fsync \(handle.path): metadata: \(error)")
            throw .metadata(error)
        }
    }

    /// fallocate(2): reserving space is honest (the backing range is allocated and reads as a
    /// hole); punching holes and collapsing ranges are not offered. Like a write, it takes the
    /// file's set-id bits when the caller lacks CAP_FSETID: the kernel asks the daemon to with
    /// FUSE_HANDLE_KILLPRIV_V2 but flags no FALLOCATE, so the caller's capabilities are read
    /// here, and only for a file that has such a bit.
    func fallocate(_ fh: UInt64, mode: Int32, offset: Int, length: Int, caller: Caller) throws(FSError) {
        try fallocate(fh, mode: mode, offset: offset, length: length)
        guard let file = openFiles.handle(fh)?.file, let st = try? Descriptor(rawValue: file.fd).fstat(),
              Self.setIDBitsToKill(st) != 0, !Self.holdsCapability(caller, Self.capFSetID) else { return }
        if Self.killSetIDBits(file.fd) { modeChangedBehindTheKernel(file) }
    }

    private func fallocate(_ fh: UInt64, mode: Int32, offset: Int, length: Int) throws(FSError) {
        evictions.drain()
        guard let handle = openFiles.handle(fh) else { throw .posix(EBADF) }
        guard offset >= 0, length > 0 else { throw .posix(EINVAL) }
        guard mode & ~Descriptor.keepSize == 0 else { throw .posix(EOPNOTSUPP) }
        guard volume.layout.fits(offset: offset, length: length) else { throw .posix(EFBIG) }
        let file = handle.file
        let layout = volume.layout
        do {
            try file.content.withWriteLock { () throws(FSError) in
                let end = offset + length
                let diskStart = layout.diskOffset(ofBlock: offset / layout.blockSize)
                let diskEnd = layout.backingSize(plaintextSize: max(end, file.size))
                try system { () throws(SystemError) in
                    try Descriptor(rawValue: file.fd).fallocate(mode: Descriptor.keepSize, offset: diskStart, length: diskEnd - diskStart)
                }
                if mode & Descriptor.keepSize == 0 && end > file.size { try resize(file, to: end) }
            }
        } catch {
            // A backing fallocate's own errno is answered as is, as before, without a log line.
            if case .system = error { throw error }
            Self.logFailure(error.errno, "fallocate \(handle.path): \(error)")
            throw error
        }
    }
}

/// Runs a content operation, reporting its failure as a `FSError`.
func content<R>(_ body: () throws(ContentError) -> R) throws(FSError) -> R {
    do { return try body() } catch { throw .content(error) }
}
