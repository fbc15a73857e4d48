import Glibc
import Synchronization
import CMKFormat
import CMKSystem

/// One backing object the kernel knows.
///
/// Inodes are keyed by the backing `(st_dev, st_ino)`, so every name of a hard-linked file is
/// one kernel inode: a write, chmod or link through one name is seen through all of them at
/// once (the high-level libfuse API gave each path its own kernel inode, which went stale).
///
/// An inode is anchored by a kernel **file handle** (`name_to_handle_at`) and opened with
/// `open_by_handle_at` when an operation needs it, not by a descriptor held open: the kernel can
/// cache hundreds of thousands of inodes, far more than a process may hold descriptors (20,000
/// here). A backing filesystem without file handles falls back to a held `O_PATH` descriptor.
final class Inode: @unchecked Sendable {
    // Sound: everything but `lookups` and `nodeGeneration` is immutable after init or is itself
    // synchronized (`state`'s mutex, the descriptor's atomic); those two are touched only under
    // the table's mutex.
    //
    // The kernel may know hundreds of thousands of inodes, so every byte here counts (docs/
    // operator-guide.md, "Daemon memory"): one mutex over all mutable fields rather than one
    // each (each took a futex word padded to eight bytes), the handle kept inline
    // (`FileHandle`), the held or kept descriptor in one word, and the entry a lookup noted
    // kept once even when it is also the verified one.
    let identity: InodeIdentity
    /// The file-type bits of the mode (`S_IFREG`, `S_IFDIR`, …); the type never changes.
    let kind: mode_t
    /// The descriptor the inode holds: its anchor when the backing filesystem has no file
    /// handles (`handle` nil, set at init), else a directory's kept descriptor (`keep`), or -1.
    /// Owned by hand, like a held anchor: closed by `deinit`.
    private let fd: Atomic<Int32>
    var lookups: UInt64 = 0
    /// What reaches the object: its file handle, or (nil) the descriptor `fd` holds.
    private let handle: FileHandle?
    /// The high half of the inode's node id (`NodeSlots`); in the padding after `handle`.
    var nodeGeneration: UInt32 = 0
    private let state = Mutex(State())

    /// The mutable fields, each set once or replaced whole.
    private struct State {
        /// Where it was last reached, for its audit records' path (AuditNames.swift).
        var auditName: AuditName?
        /// A regular file's entry the kernel last reached it by (FileSystem+Bindings.swift).
        var seen: EntryLink?
        /// A directory's id (encrypted names), read from its `.cmkfs-dirid` once: ids never change.
        var directoryID: [UInt8]?
        /// A regular file's id, once an open or the create read it from its header (the id
        /// never changes; a rekey keeps it), as two words rather than a `FileID`, whose byte
        /// array would be one more heap allocation per inode. All zero: not known (a random id
        /// is never all zero in practice, and if it were, the header would just be read).
        var fileIDWords: (UInt64, UInt64) = (0, 0)
        /// Whether an open checked the binding of `seen` (or the create made it).
        var seenVerified = false
    }

    /// The file's id, if an open or the create read it (`FileSystem.knownFileID`): removing a
    /// name then needs no open and read of the header.
    var fileID: FileID? {
        let (high, low) = state.withLock { $0.fileIDWords }
        guard high | low != 0 else { return nil }
        return FileID(bytes: (0..<16).map { i in UInt8(truncatingIfNeeded: (i < 8 ? high : low) >> (56 - 8 * UInt64(i % 8))) })
    }

    /// Keeps `id` as the file's id (`fileID`).
    func noteFileID(_ id: FileID) {
        var high: UInt64 = 0, low: UInt64 = 0
        for i in 0..<8 {
            high = high << 8 | UInt64(id.bytes[i])
            low = low << 8 | UInt64(id.bytes[8 + i])
        }
        state.withLock { $0.fileIDWords = (high, low) }
    }

    /// A directory's id, once read (`NameLayer.directoryID`).
    var directoryID: [UInt8]? { state.withLock { $0.directoryID } }

    /// Keeps a directory's id.
    func noteDirectoryID(_ id: [UInt8]) { state.withLock { $0.directoryID = id } }

    /// The entry the kernel last reached a regular file by, and whether an open checked its
    /// binding (or the create made it) since.
    var entry: (seen: EntryLink?, verified: Bool) { state.withLock { ($0.seen, $0.seenVerified) } }

    /// The kernel reached the file through `link`. `verified`: its binding is known to be there
    /// (the caller made it). The same entry noted again keeps its check, and the link already
    /// stored (one string per inode, not one per lookup); another entry is unchecked.
    func noteEntry(_ link: EntryLink, verified: Bool) {
        state.withLock { s in
            if s.seen == link {
                s.seenVerified = s.seenVerified || verified
            } else {
                s.seen = link
                s.seenVerified = verified
            }
        }
    }

    /// An open checked the binding of `link`: true if it is still the entry last seen.
    func entryVerified(_ link: EntryLink?) {
        state.withLock { s in if let link, s.seen == link { s.seenVerified = true } }
    }

    /// The entry `link` is gone: if it was the one last seen, no entry is known now.
    func entryRemoved(_ link: EntryLink) {
        state.withLock { s in
            if s.seen == link { (s.seen, s.seenVerified) = (nil, false) }
        }
    }

    /// The file handle anchoring the inode, if it has one (`ForgottenFiles`).
    var anchor: FileHandle? { handle }

    /// What opens learned about this regular file, when they learned its id (`ForgottenFiles`).
    var facts: ForgottenFiles.Facts? {
        state.withLock { s in
            guard s.fileIDWords.0 | s.fileIDWords.1 != 0 else { return nil }
            return ForgottenFiles.Facts(fileIDWords: s.fileIDWords, verified: s.seenVerified ? s.seen : nil)
        }
    }

    /// Takes what opens of this file learned before the kernel forgot its last inode; set before
    /// the inode is shared, so a lookup's `noteEntry` then keeps the check only for that entry.
    func restore(_ facts: ForgottenFiles.Facts) {
        state.withLock { s in
            s.fileIDWords = facts.fileIDWords
            if let link = facts.verified { (s.seen, s.seenVerified) = (link, true) }
        }
    }

    /// Runs `body` on the audit name, under the inode's lock.
    func withAuditName<R>(_ body: (inout AuditName?) -> R) -> R { state.withLock { body(&$0.auditName) } }

    /// Directories' descriptors kept now, across all inodes.
    private static let keptDirectories = Atomic<Int>(0)
    /// Well below the descriptor limit, which open files need.
    static let directoryBudget = 1024

    /// An inode anchored by a file handle of the object `fd` names (and `fd` is closed), or by
    /// `fd` itself when the backing filesystem has no file handles.
    init(adopting fd: consuming FileDescriptor, identity: InodeIdentity, kind: mode_t) {
        self.identity = identity
        self.kind = kind
        if let handle = try? fd.descriptor.fileHandle("", flags: OpenFlags.atEmptyPath) {
            self.handle = handle
            self.fd = Atomic(-1)
        } else {
            self.handle = nil
            self.fd = Atomic(fd.release())
        }
    }

    /// An inode anchored by a file handle of the object open at `fd`, which stays the caller's;
    /// nil when the backing filesystem has no file handles.
    init?(handleOf fd: Int32, identity: InodeIdentity, kind: mode_t) {
        guard let handle = try? Descriptor(rawValue: fd).fileHandle("", flags: OpenFlags.atEmptyPath) else { return nil }
        self.identity = identity
        self.kind = kind
        self.handle = handle
        self.fd = Atomic(-1)
    }

    /// An inode anchored by `handle`, taken by name (`FileSystem.entryByName`).
    init(handle: FileHandle, identity: InodeIdentity, kind: mode_t) {
        self.identity = identity
        self.kind = kind
        self.handle = handle
        self.fd = Atomic(-1)
    }

    /// The root: always a held descriptor, which is also the mount descriptor for handles.
    init(root fd: Int32, identity: InodeIdentity) {
        self.identity = identity
        self.kind = S_IFDIR
        self.handle = nil
        self.fd = Atomic(fd)
    }

    deinit {
        let held = fd.load(ordering: .acquiring)
        guard held >= 0 else { return }
        try? FileDescriptor(adopting: held).close()
        if handle != nil { Self.keptDirectories.subtract(1, ordering: .relaxed) }
    }

    /// Whether `other` is the very same backing object. Inode numbers are reused once a file is
    /// gone, and a handle-anchored inode does not keep its number busy, so identity alone can
    /// name two objects over time; the handle carries the inode's generation and tells them apart.
    func sameObject(as other: Inode) -> Bool {
        guard identity == other.identity else { return false }
        switch (handle, other.handle) {
        case (let a?, let b?): return a == b
        case (nil, nil): return true
        default: return false
        }
    }

    /// Whether `handle` is this inode's anchor: the handle carries the inode's generation, so a
    /// match is this very object, never a later one with its reused number.
    func isAnchored(by handle: FileHandle) -> Bool {
        self.handle == handle
    }

    /// Runs `body` with an `O_PATH` descriptor on the object, opened for this call and closed
    /// after it; nil when the object cannot be opened (gone: ESTALE).
    func withDescriptor<R>(mountFD: Int32, _ body: (Int32) -> R) -> R? {
        // Held (no handle) or kept (a directory's): the same descriptor for every request.
        let held = fd.load(ordering: .acquiring)
        if held >= 0 { return body(held) }
        guard let handle else { return nil }
        guard let fd = try? handle.open(mount: Descriptor(rawValue: mountFD), flags: OpenFlags.path | O_CLOEXEC | O_NOFOLLOW) else {
            return nil
        }
        // Kept: the inode owns it now, and closes it in `deinit`.
        if kind == S_IFDIR, keep(fd.rawValue) { return body(fd.release()) }
        return body(fd.rawValue)
    }

    /// A descriptor opened with `flags` (not `O_PATH`) straight from the inode's file handle: an
    /// OPEN took three calls the other way (`withDescriptor`'s `O_PATH` open, a reopen through
    /// `/proc/self/fd`, the close), one here. Nil when the inode is anchored by a held descriptor
    /// (no file handles), whose callers reopen it through `/proc/self/fd` as before.
    func open(mountFD: Int32, flags: Int32) throws(SystemError) -> FileDescriptor? {
        guard let handle else { return nil }
        return try handle.open(mount: Descriptor(rawValue: mountFD), flags: flags | O_CLOEXEC | O_NOFOLLOW)
    }

    /// Keeps `fd` as this directory's descriptor if the budget allows and no other request
    /// kept one first; false: the caller closes it after use. A handle-anchored directory's
    /// descriptor is kept from its first request until the kernel forgets it: every LOOKUP,
    /// CREATE, UNLINK and GETATTR in a directory opened it by handle and closed it again (two of
    /// the ~100 system calls the daemon made per extracted file, each time). Directories only:
    /// they are few, and busy. A kept descriptor pins the inode (its number is not reused while
    /// held) and follows renames.
    private func keep(_ fd: Int32) -> Bool {
        guard Self.keptDirectories.add(1, ordering: .relaxed).newValue <= Self.directoryBudget,
              self.fd.compareExchange(expected: -1, desired: fd, ordering: .acquiringAndReleasing).exchanged else {
            Self.keptDirectories.subtract(1, ordering: .relaxed)
            return false
        }
        return true
    }
}

/// The kernel's node ids ↔ inodes, with lookup counts (incremented by each entry reply,
/// decremented by `forget`; an inode is dropped at zero). The root is node 1 and never dropped.
final class InodeTable: Sendable {
    private let state = Mutex(NodeSlots())
    static let rootNode: UInt64 = 1
    /// What opens learned about regular files the kernel forgot.
    let forgotten = ForgottenFiles()

    init(root: Inode) {
        root.lookups = 1
        let node = state.withLock { $0.add(root) }
        precondition(node == Self.rootNode, "the root's node id is \(node)")
    }

    func get(_ node: UInt64) -> Inode? { state.withLock { $0.inode(node) } }

    /// The node id the kernel knows the backing object by, if it knows it.
    func node(for identity: InodeIdentity) -> UInt64? { state.withLock { $0.node(for: identity) } }

    /// Registers one more lookup of the object behind `fd` (an `O_PATH` descriptor the table
    /// takes over) and returns its node id.
    /// The inode of a backing object, if the kernel knows it.
    func inode(for identity: InodeIdentity) -> Inode? {
        state.withLock { s in s.node(for: identity).flatMap { s.inode($0) } }
    }

    func remember(fd: consuming FileDescriptor, identity: InodeIdentity, kind: mode_t) -> UInt64 {
        // Making the handle is a system call: done outside the lock, then raced for.
        remember(Inode(adopting: fd, identity: identity, kind: kind))
    }

    /// `remember` for an object open at `fd` (left open), anchored by its file handle; nil when
    /// the backing filesystem has none (the caller then hands over a descriptor of its own).
    func remember(handleOf fd: Int32, identity: InodeIdentity, kind: mode_t) -> UInt64? {
        Inode(handleOf: fd, identity: identity, kind: kind).map(remember)
    }

    private func remember(_ fresh: Inode) -> UInt64 {
        let identity = fresh.identity
        // Before the table's lock (`fresh` is not shared yet); unused if the inode is known.
        forgotten.restore(fresh)
        return state.withLock { s in
            if let node = s.node(for: identity), let inode = s.inode(node), inode.sameObject(as: fresh) {
                inode.lookups += 1
                return node
            }
            // New, or a reused inode number: a new node. The kernel forgets the old one in time.
            fresh.lookups = 1
            return s.add(fresh)
        }
    }

    /// One more lookup of an object the kernel knows already, found by `identity` and proven
    /// the same object by its file `handle`; nil when no known inode matches both.
    func rememberKnown(_ identity: InodeIdentity, handle: FileHandle) -> UInt64? {
        state.withLock { s in
            guard let node = s.node(for: identity), let inode = s.inode(node), inode.isAnchored(by: handle) else { return nil }
            inode.lookups += 1
            return node
        }
    }

    /// `remember` for an object anchored by `handle`, taken by name.
    func remember(handle: FileHandle, identity: InodeIdentity, kind: mode_t) -> UInt64 {
        remember(Inode(handle: handle, identity: identity, kind: kind))
    }

    /// `remember` for a descriptor held as a bare `Int32`, which the table takes over.
    func remember(fd: Int32, identity: InodeIdentity, kind: mode_t) -> UInt64 {
        remember(fd: FileDescriptor(adopting: fd), identity: identity, kind: kind)
    }

    /// `forget`: drops `count` lookups; the last one releases the inode.
    func forget(_ node: UInt64, count: UInt64) {
        guard node != Self.rootNode else { return }
        let dropped: Inode? = state.withLock { s in
            guard let inode = s.inode(node) else { return nil }
            precondition(inode.lookups >= count, "lookup count of node \(node) would go negative")
            inode.lookups -= count
            guard inode.lookups == 0 else { return nil }
            return s.remove(node)
        }
        // The inode (and any descriptor it holds) is released here, outside the lock.
        if let dropped { forgotten.keep(dropped) }
    }

    var count: Int { state.withLock { $0.count } }

    /// Every inode the kernel knows now (the root too), for a sweep over all of them.
    var all: [Inode] { state.withLock { $0.all } }
}

/// An inode with a descriptor open on it for the length of one request.
struct Node {
    let inode: Inode
    let fd: Int32
    var kind: mode_t { inode.kind }
    var identity: InodeIdentity { inode.identity }
    /// The calls on the descriptor.
    var descriptor: Descriptor { Descriptor(rawValue: fd) }
    /// A path that reaches the object through the descriptor, for calls that take no fd.
    var procPath: String { "/proc/self/fd/\(fd)" }
}
