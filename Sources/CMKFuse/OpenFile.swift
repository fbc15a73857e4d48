import Glibc
import Synchronization
import CMKCrypto
import CMKFormat
import CMKKeyService
import CMKSystem

/// The state of one open backing inode, shared by every handle (and every hard link) that opened
/// it: the backing descriptor, the lease on the file's DEK, the plaintext size and the lock over
/// content.
///
/// Lock order: see `OpenFiles`. `content` is held for a whole read (shared) or write/truncate
/// (exclusive) and never across a key-provider call.
final class OpenFile: @unchecked Sendable {
    // Sound: `descriptor` and `file` are immutable; `size` is read under `content` shared and written
    // under `content` exclusive; `lease` sits behind its own mutex (and is replaced only under
    // `content` exclusive); `refs` is touched only under the table's mutex.
    /// The backing descriptor, closed when the last handle and request let go of this open file.
    private let descriptor: FileDescriptor
    /// The backing descriptor's number, valid while this open file lives.
    var fd: Int32 { descriptor.rawValue }
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

    init(fd: consuming FileDescriptor, file: ContentFile, lease: KeyLease, identity: InodeIdentity, size: Int) {
        self.descriptor = fd
        self.file = file
        leaseCell = Mutex(lease)
        self.identity = identity
        self.size = size
    }

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
