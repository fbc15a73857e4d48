import Glibc
import Synchronization
import CMKCrypto
import CMKFormat
import CMKKeyService

/// The state of one open backing inode, shared by every handle (and every hard link) that opened
/// it: the backing descriptor, the lease on the file's DEK, the plaintext size and the lock over
/// content.
///
/// Lock order: `OpenFileTable.entries` before nothing (never held while taking `content`);
/// `content` is held for a whole read (shared) or write/truncate (exclusive) and never across a
/// key-provider call.
final class OpenFile: @unchecked Sendable {
    // Sound: `fd` and `file` are immutable; `size` is read under `content` shared and written
    // under `content` exclusive; `lease` sits behind its own mutex (and is replaced only under
    // `content` exclusive); `refs` is touched only under the table's mutex.
    let fd: Int32
    let file: ContentFile
    /// The DEK, as the key cache lends it: checked on every request, so a flush or revocation
    /// stops this open file's next read or write. Readable without `content`, so the kill switch
    /// never waits behind a long write or a rekey to learn which lease a file uses.
    var lease: KeyLease {
        get { leaseCell.withLock { $0 } }
        set { leaseCell.withLock { $0 = newValue } }
    }
    private let leaseCell: Mutex<KeyLease>
    let identity: InodeIdentity
    let content = RWLock()
    var size: Int
    var refs = 1

    init(fd: Int32, file: ContentFile, lease: KeyLease, identity: InodeIdentity, size: Int) {
        self.fd = fd
        self.file = file
        leaseCell = Mutex(lease)
        self.identity = identity
        self.size = size
    }

    deinit { close(fd) }

    /// The DEK for one request; call with `content` held (either mode).
    func key() throws(FSError) -> SecretBytes {
        switch lease.key(now: monotonicNow()) {
        case .success(let key): return key
        case .failure(let refusal): throw .refused(refusal)
        }
    }
}

/// A backing inode's identity: stable while any descriptor on it is open.
struct InodeIdentity: Hashable, Sendable {
    let device: UInt
    let inode: UInt
}

/// Open backing inodes by identity, so every open of one file shares one `OpenFile`.
final class OpenFileTable: Sendable {
    private let entries = Mutex<[InodeIdentity: OpenFile]>([:])

    /// The entry for `identity` with one more reference, if the inode is open.
    func retain(_ identity: InodeIdentity) -> OpenFile? {
        entries.withLock { table in
            guard let file = table[identity] else { return nil }
            file.refs += 1
            return file
        }
    }

    /// Inserts `file`, or, when another thread inserted the same inode first, returns that one
    /// with a new reference (the caller then drops its own).
    func insert(_ file: OpenFile) -> OpenFile {
        entries.withLock { table in
            if let existing = table[file.identity] {
                existing.refs += 1
                return existing
            }
            // The caller's stat may predate writes through an entry for this inode that was
            // closed since; with no entry left, nothing can write now, so re-read the size here.
            var st = stat()
            if fstat(file.fd, &st) == 0 { file.size = file.file.layout.displaySize(backingSize: Int(st.st_size)) }
            table[file.identity] = file
            return file
        }
    }

    /// Drops one reference; the last one closes the descriptor and unpins the DEK's lease.
    func release(_ file: OpenFile, cache: KeyCache) {
        let last = entries.withLock { table in
            file.refs -= 1
            precondition(file.refs >= 0, "open-file reference count went negative")
            if file.refs == 0 { table[file.identity] = nil }
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
    /// The path at open time, for log lines (a later rename is not reflected).
    let path: String

    init(file: OpenFile, append: Bool, path: String) {
        self.file = file
        self.append = append
        self.path = path
    }
}

/// Handles by number: `fi->fh` holds a number, not a pointer, so a stale or bogus value from the
/// kernel is an EBADF, not a crash.
final class HandleTable: Sendable {
    private struct State {
        var next: UInt64 = 1
        var handles: [UInt64: Handle] = [:]
    }
    private let state = Mutex(State())

    func add(_ handle: Handle) -> UInt64 {
        state.withLock { s in
            let id = s.next
            s.next += 1
            s.handles[id] = handle
            return id
        }
    }

    func get(_ id: UInt64) -> Handle? { state.withLock { $0.handles[id] } }

    func remove(_ id: UInt64) -> Handle? { state.withLock { $0.handles.removeValue(forKey: id) } }
}

/// Reusable per-request crypto state (`ContentScratch`), so the hot path allocates nothing.
///
/// A scratch's cipher context keeps the schedule of the last DEK it used. `forgetKeys` (called
/// whenever keys leave the cache) wipes every idle one, and bumps a generation so that one in
/// use by a request at that moment is wiped when it comes back: no dropped DEK stays keyed in
/// a worker's context.
final class ScratchPool: Sendable {
    private struct State {
        var free: [ScratchBox] = []
        var generation = 0
    }
    private let layout: BlockLayout
    private let state = Mutex(State())

    init(layout: BlockLayout) { self.layout = layout }

    func with<R, E: Error>(_ body: (ContentScratch) throws(E) -> R) throws(E) -> R {
        let (box, generation) = state.withLock { s in (s.free.popLast() ?? ScratchBox(ContentScratch(layout: layout)), s.generation) }
        defer {
            state.withLock { s in
                if s.generation != generation { box.scratch.forgetKey() }
                s.free.append(box)
            }
        }
        return try body(box.scratch)
    }

    /// Wipes the key schedules of every scratch, now (idle ones) or when returned (busy ones).
    func forgetKeys() {
        state.withLock { s in
            s.generation += 1
            for box in s.free { box.scratch.forgetKey() }
        }
    }
}

/// Sound as Sendable: a scratch is used by exactly one thread between taking it from the pool
/// and returning it, and the pool's mutex orders those hand-overs (`forgetKeys` touches only
/// the idle ones, under that mutex).
private final class ScratchBox: @unchecked Sendable {
    let scratch: ContentScratch
    init(_ scratch: ContentScratch) { self.scratch = scratch }
}
