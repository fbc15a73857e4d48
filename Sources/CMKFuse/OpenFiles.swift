import Glibc
import Synchronization
import CMKCrypto
import CMKFormat
import CMKKeyService
import CMKKeys
import CMKSystem
import CMKVolume

/// Open files and the DEK leases they hold: the table of open backing inodes (one `OpenFile`
/// per inode, shared by every handle and every hard link), the handle numbers the kernel holds
/// (`fi->fh`), the lease an open takes from the key cache, its revival by a new open after a
/// flush, and the choice of which open files a dropped key cuts.
///
/// Lock order (outer first): `OpenFile.content` → the key cache's own mutex (`unpin` and
/// `replace` run under `content`). `OpenFileTable.entries` → `OpenFileTable.dropped` (a
/// leaf); `HandleTable.state` and `OpenFile.leaseCell` are leaves: nothing is taken while one
/// is held, and under `entries` only `dropped` (the table's last
/// release drops `entries` before it takes `content` to unpin). No lock here is held across a
/// key-provider call: a lease is taken first (`cache.lease` may unwrap through the provider)
/// and only then installed under `content` held exclusively. The kill switch reads leases
/// through `leaseCell` alone, so it never waits for `content` (a long write, a rekey).
final class OpenFiles: Sendable {
    private let volume: Volume
    private let cache: KeyCache
    /// For the process name a key request carries.
    private let processNames: ProcessNames
    private let table = OpenFileTable()
    private let handles = NumberedTable<Handle>()

    init(volume: Volume, cache: KeyCache, processNames: ProcessNames) {
        self.volume = volume
        self.cache = cache
        self.processNames = processNames
    }

    // MARK: opening

    /// Shares or builds the `OpenFile` for the inode behind `fd` (consumed), with a new
    /// reference and a live lease on its DEK.
    /// `noAccessTime`: `fd` was opened with O_NOATIME (for the header's read), which is then
    /// cleared; said by the caller, which knows, rather than asked of the kernel per open.
    func open(fd: consuming FileDescriptor, label: @autoclosure () -> String, use: inout KeyUse, noAccessTime: Bool = false) throws(FSError) -> OpenFile {
        var none: BindingProbe?
        return try open(fd: fd, label: label(), use: &use, binding: &none, noAccessTime: noAccessTime)
    }

    /// `open`, reading the name binding `binding` asks about with the key when the key is a
    /// miss (its `answer` is then set); on a hit nothing is read for it. `knownFileID`: the
    /// file's id as its inode holds it (read from this inode's header before), so the header
    /// is not read.
    /// `label` names the file in a failure's log line (built only then).
    func open(fd: consuming FileDescriptor, label: @autoclosure () -> String, use: inout KeyUse, binding: inout BindingProbe?,
              noAccessTime: Bool = false, knownFileID: FileID? = nil, expected: InodeIdentity? = nil) throws(FSError) -> OpenFile {
        // Counted before the stat: if no open file of this inode is dropped from the table
        // until the new one goes in, the size taken here is still the file's
        // (`OpenFileTable.insert`). `expected`: the inode the caller opened, when it knows it.
        let dropsBefore = expected.map { table.drops(of: $0) }
        let st = try system { () throws(SystemError) in try fd.descriptor.fstat() }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw .posix(EINVAL) }
        let identity = InodeIdentity(st)
        if let existing = table.retain(identity) {
            // The inode's open file has a descriptor of its own already.
            try? fd.close()
            use.fileID = existing.file.fileID
            use.key = existing.content.withReadLock { existing.lease.keyRef }
            do { try revive(existing, use: &use) } catch { release(existing); throw error }
            return existing
        }
        // Unwrapping may call out to the key provider: no lock is held here.
        let fileID: FileID
        if let knownFileID {
            fileID = knownFileID
            use.fileID = fileID
        } else {
            do { fileID = try ContentFile.readFileID(fd: fd.rawValue); use.fileID = fileID } catch {
                let failure = FSError.content(error)
                FileSystem.logFailure(failure.errno, "\(label()): \(error)")
                throw failure
            }
        }
        // Applications' reads through this descriptor update the access time, as they would
        // locally. The descriptor is the caller's fresh open, whose only F_SETFL flag is
        // O_NOATIME (no O_APPEND, O_NONBLOCK, O_DIRECT or O_ASYNC): setting none clears it.
        if noAccessTime { try? fd.descriptor.setStatusFlags(0) }
        let lease: KeyLease
        do { lease = try leaseKey(fileID, use: &use, binding: &binding) } catch {
            use.error = error.description
            let failure = FSError.fileKey(error)
            FileSystem.logFailure(failure.errno, "\(label()): cannot get the data key of file \(fileID): \(error)")
            throw failure
        }
        let raw = fd.rawValue
        let file = OpenFile(fd: fd, file: ContentFile(fd: raw, fileID: fileID, layout: volume.layout), lease: lease,
                            identity: identity, size: volume.layout.displaySize(backingSize: Int(st.st_size)))
        return adopt(file, sizeTakenAfter: identity == expected ? dropsBefore : nil)
    }

    /// The lease of a DEK the caller just made (create): nothing to unwrap.
    func lease(newKey key: SecretBytes, _ ref: KeyRef, for fileID: FileID) -> KeyLease {
        cache.lease(for: fileID.bytes) { (key, ref) }
    }

    /// Inserts a new open file, or joins the entry another thread inserted first (dropping the
    /// new one's lease). `created`: the file was made by this call, so its size is the one it
    /// was made with. `sizeTakenAfter`: `OpenFileTable.drops(of:)` for the file's inode, read
    /// before its size was taken (`OpenFileTable.insert`).
    func adopt(_ file: OpenFile, created: Bool = false, sizeTakenAfter drops: UInt64? = nil) -> OpenFile {
        let shared = table.insert(file, sizeKnown: created, sizeTakenAfter: drops)
        if shared !== file { cache.unpin(file.lease) }
        return shared
    }

    /// Gives back a lease that no open file took (a create that failed after leasing).
    func giveBack(_ lease: KeyLease) { cache.unpin(lease) }

    /// Drops one reference; the last one closes the descriptor and unpins the DEK's lease.
    func release(_ file: OpenFile) { table.release(file, cache: cache) }

    /// The DEK's lease from the cache; a miss unwraps through the provider (no lock held).
    private func leaseKey(_ fileID: FileID, use: inout KeyUse) throws(FileKeyError) -> KeyLease {
        var none: BindingProbe?
        return try leaseKey(fileID, use: &use, binding: &none)
    }

    /// `leaseKey`; a miss reads `binding`'s row in the key's own metadata statement.
    private func leaseKey(_ fileID: FileID, use: inout KeyUse, binding: inout BindingProbe?) throws(FileKeyError) -> KeyLease {
        var missed = false
        var request: KeyRequest?
        defer {
            use.cache = missed ? "miss" : "hit"
            if missed { use.request = request }
        }
        let lease = try cache.lease(for: fileID.bytes) { () throws(FileKeyError) -> (SecretBytes, KeyRef) in
            missed = true
            request = use.keyRequest(processNames: processNames, reason: volume.kmsReason)
            if let tag = binding?.tag(fileID) {
                let read = try volume.fileKeyAndVersion(fileID, request: request, boundBy: tag)
                binding?.answer = (fileID, read.bound)
                return (read.key, read.ref)
            }
            return try volume.fileKeyAndVersion(fileID, request: request)
        }
        use.key = lease.keyRef
        // Debug, not info: one line per key-provider call (at most one per file per TTL).
        if missed { FileSystem.logger.debug("unwrapped the data key of file \(fileID) under \(lease.keyRef)") }
        return lease
    }

    /// A new open of a file whose lease was dropped (revocation, expiry) asks the provider
    /// again; handles opened before the drop share this open file, so they read again too once
    /// the new open got the key (until then they stay cut).
    private func revive(_ file: OpenFile, use: inout KeyUse) throws(FSError) {
        guard !file.content.withReadLock({ file.lease.isLive }) else { return }
        let fresh: KeyLease
        do { fresh = try leaseKey(file.file.fileID, use: &use) } catch {
            use.error = error.description
            let failure = FSError.fileKey(error)
            FileSystem.logFailure(failure.errno, "file \(file.file.fileID): cannot get the data key: \(error)")
            throw failure
        }
        swapLease(of: file, to: fresh)
    }

    /// Installs `fresh` as the file's lease (under `content` held exclusively, so no request is
    /// between its key check and its use) and unpins the old one.
    func swapLease(of file: OpenFile, to fresh: KeyLease) {
        let old = file.content.withWriteLock { () -> KeyLease in
            let old = file.lease
            file.lease = fresh
            return old
        }
        cache.unpin(old)
    }

    /// Rekey: replaces the file's DEK in the cache and in the file; call with `content` held
    /// exclusively (the re-encryption holds it).
    func installRekeyed(_ file: OpenFile, key: SecretBytes, ref: KeyRef) {
        let old = file.lease
        file.lease = cache.replace(fileID: file.file.fileID.bytes, key: key, keyRef: ref)
        cache.unpin(old)
    }

    // MARK: handles

    /// A new handle on `file` (which it owns one reference of): the number for `fi->fh`.
    func addHandle(_ handle: Handle) -> UInt64 { handles.add(handle) }

    func handle(_ fh: UInt64) -> Handle? { handles.get(fh) }

    /// The open file of the inode `identity`, if one is open; its descriptor stays open while
    /// the caller holds the result.
    func openFile(of identity: InodeIdentity) -> OpenFile? { table.current(identity) }

    /// Closes a handle: EBADF for a number that names none.
    func closeHandle(_ fh: UInt64) throws(FSError) {
        guard let handle = handles.remove(fh) else { throw .posix(EBADF) }
        release(handle.file)
    }

    // MARK: cutting

    /// The open files whose lease matches (a flush's, or the leases a drop killed).
    func files(where matching: (KeyLease) -> Bool) -> [OpenFile] {
        table.all.filter { matching($0.lease) }
    }

    /// How many open files use a DEK of `fileIDs` (the files a flush cut).
    func count(using fileIDs: Set<[UInt8]>) -> Int {
        table.all.filter { fileIDs.contains($0.file.fileID.bytes) }.count
    }

    /// Number of open backing inodes.
    var count: Int { table.count }
}

/// Open backing inodes by identity, so every open of one file shares one `OpenFile`.
private final class OpenFileTable: Sendable {
    private let entries = Mutex<[InodeIdentity: OpenFile]>([:])
    /// Entries dropped so far (last releases), by a hash of their inode's identity into 256
    /// slots; a leaf lock, taken inside `entries`' when an entry is dropped. A slot shared by
    /// two inodes only costs a stat.
    private let dropped = Mutex<[UInt64]>(Array(repeating: 0, count: 256))

    private static func slot(_ identity: InodeIdentity) -> Int { Int(UInt(bitPattern: identity.hashValue) % 256) }

    /// How many entries of `identity`'s slot were dropped so far.
    func drops(of identity: InodeIdentity) -> UInt64 { dropped.withLock { $0[Self.slot(identity)] } }

    /// The entry for `identity` with one more reference, if the inode is open.
    func retain(_ identity: InodeIdentity) -> OpenFile? {
        entries.withLock { table in
            guard let file = table[identity] else { return nil }
            file.refs += 1
            return file
        }
    }

    /// The entry of `identity`, without a new reference.
    func current(_ identity: InodeIdentity) -> OpenFile? { entries.withLock { $0[identity] } }

    /// Inserts `file`, or, when another thread inserted the same inode first, returns that one
    /// with a new reference (the caller then drops its own). `sizeKnown`: nothing else can have
    /// written the file since its size was taken (a file just created), so it is not re-read.
    /// `sizeTakenAfter`: `drops(of:)` the inode as it was before the caller took the size.
    func insert(_ file: OpenFile, sizeKnown: Bool = false, sizeTakenAfter drops: UInt64? = nil) -> OpenFile {
        entries.withLock { table in
            if let existing = table[file.identity] {
                existing.refs += 1
                return existing
            }
            // The caller's stat may predate writes through an entry for this inode that was
            // closed since; with no entry left, nothing can write now, so re-read the size here.
            // Unless no entry of this inode was dropped since before that stat: writes go
            // through an entry, and one that was there all along would have been found above
            // (a second fstat per open saved).
            let unchanged = drops != nil && drops == self.drops(of: file.identity)
            if !sizeKnown, !unchanged, let st = try? Descriptor(rawValue: file.fd).fstat() { file.size = file.file.layout.displaySize(backingSize: Int(st.st_size)) }
            table[file.identity] = file
            return file
        }
    }

    /// Drops one reference; the last one closes the descriptor and unpins the DEK's lease.
    func release(_ file: OpenFile, cache: KeyCache) {
        let last = entries.withLock { table in
            file.refs -= 1
            precondition(file.refs >= 0, "open-file reference count went negative")
            if file.refs == 0 {
                table[file.identity] = nil
                dropped.withLock { $0[Self.slot(file.identity)] &+= 1 }
            }
            return file.refs == 0
        }
        if last { file.content.withReadLock { cache.unpin(file.lease) } }
    }

    /// Every open file now (for invalidating kernel caches after a flush).
    var all: [OpenFile] { entries.withLock { Array($0.values) } }

    var count: Int { entries.withLock { $0.count } }
}

/// One `open()` of a file: what `fi->fh` names.
final class Handle: Sendable {
    let file: OpenFile
    let append: Bool

    init(file: OpenFile, append: Bool) {
        self.file = file
        self.append = append
    }

    /// What log lines call the file: made when a line needs it, not per open (a string built
    /// on every open that only a failure's log line read).
    var path: String { "file \(file.file.fileID)" }
}
