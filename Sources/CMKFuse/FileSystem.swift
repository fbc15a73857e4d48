import Glibc
import Logging
import Synchronization
import CFuse3
import CMKAudit
import CMKCrypto
import CMKFormat
import CMKKeyService
import CMKKeys
import CMKSystem
import CMKVolume

/// The mounted filesystem's state: the volume, the inode table over the backing tree, open files
/// and handles. Operations return their value or throw an `FSError`; only `LowLevelCallbacks`
/// replies to the kernel, with the errno `FSError.errno` decides.
public final class FileSystem: Sendable {
    let volume: Volume
    /// The backing tree's root: the root inode's descriptor and the mount descriptor
    /// for `open_by_handle_at`. The root inode owns it (it lives as long as the mount).
    let rootFD: Int32
    let inodes: InodeTable
    /// Open files, their handles and the DEK leases they hold.
    let openFiles: OpenFiles
    let directories = NumberedTable<DirectoryListing>()
    let scratch: ScratchPool
    /// Unwrapped DEKs with TTLs and leases; the only place the frontend gets keys from.
    public let cache: KeyCache
    /// Where audit records go (the volume's local log; nil only when disabled for the open-rate
    /// benchmark): every DEK use is recorded before its reply.
    public let audit: (any AuditSink)?
    /// Encrypted names (nil on a volume with names in clear): the name key's lease, directory ids.
    let names: NameLayer?
    /// The paths of audit records, kept per inode and dropped by any change of names.
    let auditNames: AuditNames
    /// The live session, for telling the kernel to drop cached pages after a flush.
    let session = Mutex<SessionPointer?>(nil)
    /// Serializes unlink, rename and link so "is this the last link?" and the removal of the
    /// file's key rows cannot interleave with a new link to the same inode.
    let namespaceLock = Mutex(())
    /// Key rows of unlinked files, deleted in batches.
    let forgets: PendingForgets
    /// Unlinked files held open until their blocks can be freed off the reply path.
    let evictions: PendingEvictions
    /// Process names for audit records, remembered for a second.
    let processNames = ProcessNames()
    /// Unnamed backing files made ahead of creates (nil when switched off); drained at unmount.
    let unnamedFiles: UnnamedFilePool?
    /// How long the kernel may cache attributes and names. Every change goes through this mount
    /// and each backing object is one kernel inode, so the caches never go stale.
    static let cacheSeconds = 1.0

    /// The kernel buffers writes in its page cache and sends them later (FUSE_CAP_WRITEBACK_CACHE,
    /// `cmkfs mount --writeback-cache`; docs/design-notes.md "Writeback cache").
    let writebackCache: Bool
    /// The channel the kernel's requests come through, and what it is doing
    /// (docs/design-notes.md, "The FUSE transport").
    public let transport: TransportStatus

    public init(volume: Volume, policy: CachePolicy = .default, audit: (any AuditSink)?, writebackCache: Bool = false,
                transport: FuseTransport = .devFuse) throws(CMKError) {
        self.volume = volume
        self.writebackCache = writebackCache
        self.transport = TransportStatus(requested: transport)
        self.audit = audit
        cache = KeyCache(policy: policy, provider: volume.provider, onEvent: {
            FileSystem.logKeyEvent($0)
            FileSystem.countKeyEvent($0)
            FileSystem.auditKeyEvent(audit, $0)
        })
        // Not O_PATH: open_by_handle_at refuses an O_PATH descriptor as its mount descriptor.
        let data: FileDescriptor
        do { data = try FileDescriptor.open(volume.dataPath, O_RDONLY | O_DIRECTORY | O_CLOEXEC) } catch {
            throw CMKError(.notAVolume, "cannot open \(volume.dataPath): \(error.errno)")
        }
        let st: stat
        do { st = try data.descriptor.fstat() } catch {
            throw CMKError(.notAVolume, "cannot open \(volume.dataPath): \(error.errno)")
        }
        let fd = data.release()
        rootFD = fd
        unnamedFiles = UnnamedFilePool(directory: Descriptor(rawValue: fd))
        openFiles = OpenFiles(volume: volume, cache: cache, processNames: processNames)
        let root = Inode(root: fd, identity: InodeIdentity(st))
        inodes = InodeTable(root: root)
        auditNames = AuditNames(root: root)
        names = volume.encryptsNames ? NameLayer(volume: volume, cache: cache, audit: audit) : nil
        scratch = ScratchPool(layout: volume.layout)
        let evictions = PendingEvictions()
        self.evictions = evictions
        forgets = PendingForgets(volume: volume, beforeWrite: { evictions.drain() })
        // The name key is unwrapped (and audited) now rather than by the first lookup.
        if let names {
            do { _ = try names.codec() } catch {
                throw CMKError(error.errno == EACCES ? .keyUnavailable : .io,
                               "cannot unwrap the name key of \(volume.path) (errno \(error.errno)); see the log above")
            }
        }
        cache.onDrop { [weak self] in self?.cutOpenFiles($0) }
        // A rekey cut short by a crash leaves a file half re-encrypted: finish it before serving.
        for line in try volume.recoverInterruptedRekeys() {
            Self.logger.notice("\(line)")
            try? audit?.append(AuditEvent("rekey", detail: line), durable: true)
        }
        try backfillBindings()
    }

    /// Opens `node` for one request and runs `body`; ESTALE when the node is unknown or its
    /// backing object is gone.
    /// `preferOpenFile`: run on the descriptor of the inode's open file when it has one.
    func withNode<R>(_ node: UInt64, preferOpenFile: Bool = false, _ body: (Node) throws(FSError) -> R) throws(FSError) -> R {
        guard let inode = inodes.get(node) else { throw .posix(ESTALE) }
        // tar sets each file's owner, mode and times (fchown, fchmod, futimens: SETATTRs without
        // a handle) while the file is still open: those run on the open file's descriptor, the
        // same inode, with no open_by_handle_at and close per request. The reference taken here
        // keeps the descriptor open until `body` returns, even if the file is closed meanwhile.
        if preferOpenFile, inode.kind == S_IFREG, let open = openFiles.openFile(of: inode.identity) {
            return try withExtendedLifetime(open) { () throws(FSError) -> R in
                try body(Node(inode: inode, fd: open.fd))
            }
        }
        let result = inode.withDescriptor(mountFD: rootFD) { fd in
            Result { () throws(FSError) -> R in try body(Node(inode: inode, fd: fd)) }
        }
        guard let result else { throw .posix(ESTALE) }
        return try result.get()
    }

    /// The kill switch inside the mount: drops the cached DEKs under `keyID` (or all); the cache
    /// then calls `cutOpenFiles` with them. Returns the number of keys dropped and of open files cut.
    public func flushKeys(keyID: String?, version: Int?, reason: String) -> (Int, Int) {
        // With the writeback cache, pages written before the flush may still be in the kernel:
        // write them back (and drop them) while the key still works, so the kill switch loses no
        // write that was accepted before it.
        if writebackCache {
            invalidateOpenFiles { lease in
                (keyID == nil || lease.keyRef.keyID == keyID) && (version == nil || lease.keyRef.version == version)
            }
        }
        let dropped = cache.flush(keyID: keyID, version: version, reason: reason)
        let revoked = Set(dropped.map(\.fileID))
        return (dropped.count, openFiles.count(using: revoked))
    }

    /// What every dropped key cuts, whichever way it left the cache (flush or revocation, a
    /// renewal the provider refused, a lease past its maximum lifetime, idle): the name codec and
    /// every plaintext name kept for audit paths if the name key went (`forgetNames`), the
    /// workers' keyed cipher contexts (`ScratchPool.forgetKeys`), and the kernel's cached pages
    /// and mappings of the open files that used the keys, so their next read comes to the mount
    /// and is refused (EACCES, or EIO once expired; SIGBUS for a mapped reader).
    /// Runs on the control or maintenance thread (`KeyCache.onDrop`), never a request thread:
    /// the kernel may wait on a page lock a request in flight holds.
    func cutOpenFiles(_ dropped: [KeyLease]) {
        if dropped.contains(where: { $0.fileID == Volume.nameKeyFileID }) { forgetNames() }
        scratch.forgetKeys()
        let gone = Set(dropped.map(ObjectIdentifier.init))
        invalidateOpenFiles { gone.contains(ObjectIdentifier($0)) }
    }

    /// The name key left the cache: nothing it alone reveals stays in the daemon. The codec
    /// (OpenSSL's key schedule) goes, and so do the plaintext names kept for audit paths (those
    /// noted on inodes, the directories' mount paths) and the decrypted entries of open
    /// directory listings. Later opens find their path from the next lookup's note, or the slow
    /// way once the name key is held again (none until then); a listing in progress is read and
    /// decrypted again by its next readdir, which the name key must allow.
    func forgetNames() {
        guard let names else { return }
        names.dropKeyedCodec()
        names.directoriesChanged()
        auditNames.forgetAll(inodes.all)
        for listing in directories.all { listing.forgetNames() }
    }

    /// Asks the kernel to drop (after writing back, if dirty) the cached pages and mappings of the
    /// open files whose lease matches (`fuse_lowlevel_notify_inval_inode` over the whole file).
    private func invalidateOpenFiles(_ matching: (KeyLease) -> Bool) {
        guard let session = session.withLock({ $0 }) else { return }
        for file in openFiles.files(where: matching) {
            if let node = inodes.node(for: file.identity) {
                fuse_lowlevel_notify_inval_inode(session.raw, node, 0, 0)
            }
        }
    }

    /// Number of open backing inodes (for tests and status).
    public var openFileCount: Int { openFiles.count }

    // MARK: helpers

    /// The calling process's uid and gid, as the kernel reported them for this request.
    struct Caller {
        var uid: uid_t
        var gid: gid_t
        var pid: pid_t = 0
    }

    /// A failed file operation: a warning when the key was refused (EACCES: a revocation the
    /// operator asked for, one line per refused use), an error otherwise (I/O, tampering).
    static func logFailure(_ errno: Int32, _ message: @autoclosure () -> String) {
        logger.log(level: errno == EACCES ? .warning : .error, "\(message())")
    }

    /// A key-service event: the periodic successful renewal is debug (one line per master-key
    /// version every --lease-renew), a failed renewal a warning, flushes and expiries info.
    static func logKeyEvent(_ event: KeyCacheEvent) {
        let level: Logger.Level = switch event.severity {
        case .debug: .debug
        case .info: .info
        case .warning: .warning
        }
        logger.log(level: level, "key event: \(event.message)")
    }

    /// Backing stat → what applications see: a regular file's size is its plaintext size.
    func present(_ st: inout stat) {
        if (st.st_mode & S_IFMT) == S_IFREG {
            st.st_size = off_t(volume.layout.displaySize(backingSize: Int(st.st_size)))
        }
    }

    /// An encrypted symlink's size is its plaintext target's length, as lstat(2) promises
    /// (tools size their readlink buffer by it): one readlink and one decryption.
    func presentSymlink(_ fd: Int32, _ st: inout stat) {
        guard names != nil, (st.st_mode & S_IFMT) == S_IFLNK, let target = try? target(ofSymlink: fd) else { return }
        st.st_size = off_t(target.utf8.count)
    }

    /// The attributes of an inode, as applications see them.
    func attributes(_ inode: Node) throws(FSError) -> stat {
        presented(inode, try backingAttributes(inode))
    }

    /// The backing attributes of an inode, through its descriptor.
    func backingAttributes(_ inode: Node) throws(FSError) -> stat {
        try system { () throws(SystemError) in try inode.descriptor.stat("", flags: OpenFlags.atEmptyPath | AT_SYMLINK_NOFOLLOW) }
    }

    /// `st`, the backing attributes of `inode`, as applications see them.
    func presented(_ inode: Node, _ st: stat) -> stat {
        var st = st
        present(&st)
        presentSymlink(inode.fd, &st)
        return st
    }

    /// The node and backing attributes of `name` in `dir`, taken by name: its attributes and its
    /// file handle, two system calls, where opening it takes four (open `O_PATH`, fstat, handle,
    /// close) and a descriptor. An object the kernel knows already is the known inode if the
    /// handles are equal (the handle carries the inode's generation, so an object that reuses a
    /// known one's number is never taken for it). A new one is anchored by this handle if the
    /// handle holds the stat's inode number (ext4's do), so both calls saw one object — unless it
    /// was removed and its number reused in between, behind the mount's back (the kernel holds
    /// the directory locked against changes through the mount), which at worst gives that
    /// object the other's attributes until they are next read. nil (found by opening it): a
    /// symlink (its size needs a descriptor of its own), a backing filesystem without such
    /// handles. Throws when the name cannot be stat'ed (ENOENT for a negative lookup: one call).
    func entryByName(_ dir: Node, _ name: String) throws(FSError) -> (node: UInt64, st: stat)? {
        let st = try system { () throws(SystemError) in try dir.descriptor.stat(name, flags: AT_SYMLINK_NOFOLLOW) }
        guard (st.st_mode & S_IFMT) != S_IFLNK, let handle = try? dir.descriptor.fileHandle(name) else { return nil }
        let identity = InodeIdentity(st)
        if let node = inodes.rememberKnown(identity, handle: handle) { return (node, st) }
        guard handle.names(inode: UInt(st.st_ino)) else { return nil }
        return (inodes.remember(handle: handle, identity: identity, kind: st.st_mode & S_IFMT), st)
    }

    /// The backing attributes of `name` in `dir`, or nil when it cannot be stat'ed (absent).
    func lstat(_ dir: Node, _ name: String) -> stat? {
        try? dir.descriptor.stat(name, flags: AT_SYMLINK_NOFOLLOW)
    }

    /// The backing name of the plaintext `name` in `dir` (itself on a plaintext-names volume).
    /// `creating`: the caller is about to make the entry.
    func backing(_ dir: Node, _ name: String, creating: Bool = false) throws(FSError) -> String {
        guard name != LowLevelCallbacks.invalidName else { throw .posix(EILSEQ) }
        guard let names else { return name }
        return try names.backingName(dir, name, creating: creating)
    }

    /// An entry reply for `name` in `dir`: one more lookup of its inode, and its attributes.
    func entry(_ dir: Node, _ name: String) throws(FSError) -> fuse_entry_param {
        var e = fuse_entry_param()
        var st: stat
        if let found = try entryByName(dir, name) {
            (e.ino, st) = found
        } else {
            let fd = try system { () throws(SystemError) in try dir.descriptor.openat(name, OpenFlags.path | O_NOFOLLOW | O_CLOEXEC) }
            st = try system { () throws(SystemError) in try fd.descriptor.fstat() }
            presentSymlink(fd.rawValue, &st)
            e.ino = inodes.remember(fd: fd, identity: InodeIdentity(st), kind: st.st_mode & S_IFMT)
        }
        if (st.st_mode & S_IFMT) == S_IFREG, let inode = inodes.get(e.ino) { noteEntry(inode, entryLink(dir, name)) }
        present(&st)
        e.attr = st
        e.attr_timeout = Self.cacheSeconds
        e.entry_timeout = Self.cacheSeconds
        return e
    }

    // MARK: opening files

    /// Opens the regular file `inode` and returns its shared state with a new reference.
    func acquire(_ inode: Node, use: inout KeyUse) throws(FSError) -> OpenFile {
        guard inode.kind == S_IFREG else { throw .posix(inode.kind == S_IFDIR ? EISDIR : EINVAL) }
        let fd = try system { () throws(SystemError) in try Descriptor.cwd.openat(inode.procPath, Self.acquireFlags) }
        return try acquire(inode.inode, opened: fd, use: &use)
    }

    /// O_NOATIME until the header is read: opening a file does not make it accessed.
    static let acquireFlags = O_RDWR | O_CLOEXEC | OpenFlags.noAccessTime

    /// `acquire` of the regular file `inode` on `fd`, a descriptor of it the caller opened with
    /// `acquireFlags` (consumed), or, when `knownFileID` is the id the inode holds
    /// (`Inode.fileID`), read-write alone: its header is not read again.
    func acquire(_ inode: Inode, opened fd: consuming FileDescriptor, knownFileID: FileID? = nil,
                 use: inout KeyUse) throws(FSError) -> OpenFile {
        // On a key miss the binding row is read with the EDEK, in one statement.
        var probe = bindingProbe(inode)
        let file = try openFiles.open(fd: fd, label: "inode \(inode.identity.inode)", use: &use, binding: &probe,
                                      noAccessTime: knownFileID == nil, knownFileID: knownFileID, expected: inode.identity)
        // The provider answered for this file's key: the name key comes back with it, off the reply path.
        if use.cache == "miss" { names?.leaseAgainAfterKeyMiss() }
        do { try checkBinding(inode, file.file.fileID, probe: probe) } catch {
            use.error = "the file is not bound to this name (moved, copied or swapped behind the mount's back)"
            openFiles.release(file)
            throw error
        }
        inode.noteFileID(file.file.fileID)
        return file
    }

    /// Creates a new encrypted file, atomically: the backing file is made unnamed (O_TMPFILE),
    /// its key row is committed, its header written, and only then is it linked under `name`.
    /// A crash at any point leaves either nothing under `name` (at worst an orphan key row, which
    /// fsck removes) or a complete file — never a name whose backing file has no header or no
    /// key. Returns the shared state of the new file.
    /// The entry comes back too when its binding row was committed with the key (encrypted
    /// names), so the file's first open need not read that row back, and so do the new file's
    /// backing attributes, for the entry reply.
    func createFile(_ dir: Node, _ name: String, mode: mode_t, caller: Caller,
                    use: inout KeyUse) throws(FSError) -> (file: OpenFile, bound: EntryLink?, attributes: stat?) {
        // No existence check here: the kernel looked the name up before calling create, and the
        // link below answers EEXIST if another creator got there first.
        let pooled = unnamedFiles?.claim(mode: mode)
        var fd: FileDescriptor
        if let pooled {
            settle(pooled: pooled, in: dir, mode: mode, caller: caller)
            fd = FileDescriptor(adopting: pooled.fd)
        } else {
            fd = try unnamedFile(in: dir, mode: mode, caller: caller)
        }
        let fileID: FileID
        do { fileID = try FileID.random() } catch {
            throw abandon(fd, nil, .posix(EIO))
        }
        use.fileID = fileID
        use.cache = "new"
        use.key = volume.activeKey
        let lease: KeyLease
        let link = entryLink(dir, name)
        let linkTag = link.flatMap { bindingTag(fileID, $0) }
        do throws(FileKeyError) {
            // The first name's binding is committed with the key, before the name exists.
            let request = keyRequest(for: use)
            use.request = request
            let (key, ref) = try volume.createFileKey(fileID, linkTag: linkTag, request: request)
            use.key = ref
            lease = openFiles.lease(newKey: key, ref, for: fileID)
        } catch {
            let failure = FSError.fileKey(error)
            Self.logFailure(failure.errno, "\(name): cannot create a data key: \(error)")
            throw abandon(fd, nil, failure)
        }
        // The key row is committed, the file has no header yet: the moment a crash used to
        // leave a name that could not be opened.
        CrashPoint.hit("create-before-header")
        do { try ContentFile(fd: fd.rawValue, fileID: fileID, layout: volume.layout).writeHeader() } catch {
            openFiles.giveBack(lease)
            throw abandon(fd, fileID, .content(error))
        }
        do throws(SystemError) { try Self.linkUnnamed(fd.descriptor, dir.descriptor, name) } catch {
            guard pooled != nil, error.errno == .EXDEV else {
                openFiles.giveBack(lease)
                throw abandon(fd, fileID, .system(error))
            }
            // The pooled file cannot be linked into `dir` (another filesystem, or one that
            // refuses links across its directories): made in `dir` itself, like before the pool.
            do throws(FSError) {
                fd = try unnamedFile(in: dir, mode: mode, caller: caller)
                try content { () throws(ContentError) in try ContentFile(fd: fd.rawValue, fileID: fileID, layout: volume.layout).writeHeader() }
                try system { () throws(SystemError) in try Self.linkUnnamed(fd.descriptor, dir.descriptor, name) }
            } catch {
                openFiles.giveBack(lease)
                throw abandon(fd, fileID, error)
            }
        }
        let created = ContentFile(fd: fd.rawValue, fileID: fileID, layout: volume.layout)
        let st = try? fd.descriptor.fstat()
        let file = OpenFile(fd: fd, file: created, lease: lease, identity: InodeIdentity(st ?? stat()), size: 0)
        return (openFiles.adopt(file, created: true), linkTag == nil ? nil : link, st)
    }

    /// A new unnamed (O_TMPFILE) file made in `dir`, owned and moded for the caller.
    private func unnamedFile(in dir: Node, mode: mode_t, caller: Caller) throws(FSError) -> FileDescriptor {
        let fd = try system { () throws(SystemError) in try dir.descriptor.openat(".", O_RDWR | OpenFlags.tmpFile | O_CLOEXEC, mode: mode & 0o7777) }
        settle(fd: fd.rawValue, in: dir, mode: mode, caller: caller)
        return fd
    }

    /// Links the unnamed (O_TMPFILE) file open at `file` as `name` in `dir`.
    /// `AT_EMPTY_PATH` links the descriptor itself, with no walk through /proc (which costs more
    /// than the link on a create); it needs CAP_DAC_READ_SEARCH, which the root daemon has
    /// (`open_by_handle_at` needs it too). Without it the kernel answers ENOENT, and the link
    /// goes through `/proc/self/fd`, whose answer is then the real one.
    static func linkUnnamed(_ file: Descriptor, _ dir: Descriptor, _ name: String) throws(SystemError) {
        do { return try file.link("", to: name, in: dir, flags: OpenFlags.atEmptyPath) } catch {
            guard error.errno == .ENOENT else { throw error }
        }
        try Descriptor.cwd.link("/proc/self/fd/\(file.rawValue)", to: name, in: dir, flags: AT_SYMLINK_FOLLOW)
    }

    /// Undoes a create that did not link its file: the unnamed inode goes with its descriptor.
    /// Returns `error`, for the caller to throw.
    private func abandon(_ fd: consuming FileDescriptor, _ fileID: FileID?, _ error: FSError) -> FSError {
        try? fd.close()
        if let fileID { try? volume.forgetFile(fileID) }
        return error
    }

    /// The file id in the header of the regular file `name` in `dir` if this is its last link.
    /// `st`: the entry's attributes when the caller has them already.
    func lastLinkFileID(_ dir: Node, _ name: String, st known: stat? = nil) -> FileID? {
        guard let st = known ?? lstat(dir, name), (st.st_mode & S_IFMT) == S_IFREG, st.st_nlink == 1 else { return nil }
        if let id = knownFileID(dir, name, st: st) { return id }
        guard let fd = try? dir.descriptor.openat(name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | OpenFlags.noAccessTime) else { return nil }
        return try? ContentFile.readFileID(fd: fd.rawValue)
    }
}

extension FileSystem {
    /// The file id of the regular file `name` in `dir` (backing attributes `st`) as its inode
    /// holds it, when an open or the create read it and the entry is still that very object (its
    /// file handle, which carries the inode's generation: not another file reusing the number).
    /// One system call on the name instead of an open, a read of the header and a close, for
    /// every `rm` of a file that was read or written through the mount. nil: read the header.
    func knownFileID(_ dir: Node, _ name: String, st: stat) -> FileID? {
        guard let inode = inodes.inode(for: InodeIdentity(st)), let id = inode.fileID,
              let handle = try? dir.descriptor.fileHandle(name), inode.isAnchored(by: handle) else { return nil }
        return id
    }

    /// The long-form target of the symlink `name` in `dir` if this is its last link (its
    /// meta.db row goes with it).
    func lastLinkLongTarget(_ dir: Node, _ name: String, st known: stat? = nil) -> String? {
        guard names != nil else { return nil }
        guard let st = known ?? lstat(dir, name), (st.st_mode & S_IFMT) == S_IFLNK, st.st_nlink == 1 else { return nil }
        guard let bytes = try? dir.descriptor.readlink(name, capacity: 64), !bytes.isEmpty else { return nil }
        let stored = String(decoding: bytes, as: UTF8.self)
        return NameCodec.isLong(stored) ? stored : nil
    }
}

extension InodeIdentity {
    init(_ st: stat) { self.init(device: UInt(st.st_dev), inode: UInt(st.st_ino)) }
}

/// The libfuse session, shared with the control thread. Sound as Sendable: libfuse's notify
/// calls (`fuse_lowlevel_notify_*`) may be made from any thread while the session lives, and
/// the pointer is cleared before the session is destroyed.
struct SessionPointer: @unchecked Sendable {
    let raw: OpaquePointer
}
