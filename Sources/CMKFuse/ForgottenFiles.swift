import Glibc
import Synchronization
import CMKSystem

/// What an open learned about a regular file, kept for a while after the kernel forgot its
/// inode: the file's id (read from its header) and the entry whose name binding an open checked.
///
/// The kernel forgets inodes under memory pressure and on `drop_caches`, and a tree read after
/// that (`find | cat` of a volume the mount had read before) made every open read the header
/// again and read its binding row from meta.db again, with the key in the cache. Kept by the
/// file's **handle**, which carries the inode's generation: a backing file replaced behind the
/// mount's back is a new object with a new handle (even with its old inode number) and is found
/// the long way; a file moved behind the mount's back is reached through another entry, whose
/// binding the next open checks. A header rewritten in place behind the mount's back is what an
/// inode the kernel still knows already trusts (`Inode.fileID`): its blocks then fail to
/// authenticate under the remembered file's key (EIO on read).
///
/// Bounded (`capacity` files, oldest dropped first), so the daemon's memory does not grow with
/// the number of files read.
final class ForgottenFiles: Sendable {
    struct Facts {
        let fileIDWords: (UInt64, UInt64)
        /// The entry whose binding an open checked, if the check still held when it was forgotten.
        let verified: EntryLink?
    }
    private struct State {
        var facts: [FileHandle: Facts] = [:]
        /// Handles in the order they were kept (a ring of `capacity` slots), to drop the oldest.
        var order: [FileHandle?]
        var next = 0
    }
    private let state: Mutex<State>
    let capacity: Int

    init(capacity: Int = 16_384) {
        self.capacity = capacity
        state = Mutex(State(order: Array(repeating: nil, count: capacity)))
    }

    /// Keeps what `inode`'s opens learned, as the kernel forgets it.
    func keep(_ inode: Inode) {
        guard inode.kind == S_IFREG, let handle = inode.anchor, let facts = inode.facts else { return }
        state.withLock { s in
            if s.facts.updateValue(facts, forKey: handle) != nil { return }
            if let oldest = s.order[s.next] { s.facts[oldest] = nil }
            s.order[s.next] = handle
            s.next = (s.next + 1) % capacity
        }
    }

    /// Gives a new inode of a forgotten file what was kept about it.
    func restore(_ inode: Inode) {
        guard inode.kind == S_IFREG, let handle = inode.anchor,
              let facts = state.withLock({ $0.facts[handle] }) else { return }
        inode.restore(facts)
    }

    /// How many files are kept now (tests).
    var count: Int { state.withLock { $0.facts.count } }
}
