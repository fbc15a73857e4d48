import Dispatch
import Glibc
import Synchronization
import CMKSystem

/// Unnamed backing files (`O_TMPFILE`) made ahead of creates, on a queue of their own, so a
/// FUSE_CREATE links a ready inode instead of allocating one while the caller waits.
///
/// Allocating the inode is the dearest system call of a create: about a sixth of its time on a
/// journaled ext4, and far more on an ext4 without a journal, whose allocator skips every inode
/// freed in the last minutes (an untar after an `rm -rf`). The pool keeps `capacity` such files
/// open in the backing root and refills itself after each claim.
///
/// Nothing can leak: a file that is never linked has no name, so it goes when its descriptor is
/// closed, by `drain()` at unmount or by the kernel when the mount process dies (a crash leaves
/// nothing behind in the backing tree; ext4's orphan list covers a power cut). The files hold no
/// key and no content until a create claims one; the create then writes its header, commits its
/// key row and links it exactly as it does a file it made itself.
///
/// A pooled file was made by the daemon in the backing root, so the create gives it the owner,
/// group and mode a file made in its own directory would have had (`claim` says what it has).
/// A link the backing filesystem refuses (another filesystem mounted inside the backing tree:
/// EXDEV) falls back to making the file in place.
final class UnnamedFilePool: Sendable {
    /// A pooled file: its descriptor and the owner and mode it was made with.
    struct File: Sendable {
        let fd: Int32
        let uid: uid_t
        let gid: gid_t
        let mode: mode_t
    }

    private struct State {
        var files: [File] = []
        var refilling = false
        var closed = false
        /// The mode of the files made next: the last create's.
        var mode: mode_t = 0o644
    }

    /// Files kept ready: more than a burst of creates on the FUSE threads takes before the
    /// refill (a single `openat` each) catches up.
    static let defaultCapacity = 32
    /// `CMKFS_UNNAMED_POOL=0` makes every create allocate its own inode (measurements, tests).
    static let enabledByEnvironment = getenv("CMKFS_UNNAMED_POOL").map { String(cString: $0) != "0" } ?? true

    let capacity: Int
    /// The pool's own descriptor of the backing root, so a refill still running at unmount
    /// never reaches a descriptor number the mount closed and reused. Closed by `drain()`.
    private let directory: Descriptor
    private let state = Mutex(State())
    private let queue = DispatchQueue(label: "cmkfs.unnamed-files", qos: .utility)

    /// A pool of files made in the directory open at `directory` (duplicated); nil when the pool
    /// is switched off or the descriptor cannot be duplicated.
    init?(directory: Descriptor, capacity: Int = UnnamedFilePool.defaultCapacity) {
        guard Self.enabledByEnvironment, capacity > 0, let own = try? directory.duplicate() else { return nil }
        self.directory = Descriptor(rawValue: own.release())
        self.capacity = capacity
    }

    /// A ready unnamed file, or nil when none is (the caller makes one itself). Starts a refill
    /// when the pool runs below its capacity. `mode`: the mode the caller wants; the files made
    /// next get it (without set-id bits), so a run of creates with one mode (tar's 0600, a
    /// shell's 0644) needs no chmod.
    func claim(mode: mode_t) -> File? {
        let (file, refill) = state.withLock { s -> (File?, Bool) in
            guard !s.closed else { return (nil, false) }
            s.mode = mode & 0o777
            let file = s.files.popLast()
            guard !s.refilling, s.files.count < capacity else { return (file, false) }
            s.refilling = true
            return (file, true)
        }
        if refill { queue.async { [self] in fill() } }
        return file
    }

    /// How many files are ready (for tests and status).
    var count: Int { state.withLock { $0.files.count } }

    /// Fills the pool up to its capacity; stops at the first failure (ENOSPC, EDQUOT, a
    /// filesystem without O_TMPFILE): the creates then make their files themselves and answer
    /// the error the backing filesystem gives them.
    private func fill() {
        while true {
            let mode = state.withLock { s -> mode_t? in
                let needed = !s.closed && s.files.count < capacity
                if !needed { s.refilling = false }
                return needed ? s.mode : nil
            }
            guard let mode else { return }
            guard let file = make(mode: mode) else {
                state.withLock { $0.refilling = false }
                return
            }
            let kept = state.withLock { s -> Bool in
                guard !s.closed else { return false }
                s.files.append(file)
                return true
            }
            if !kept { Self.close(file.fd) }
        }
    }

    private func make(mode: mode_t) -> File? {
        guard let file = try? directory.openat(".", O_RDWR | OpenFlags.tmpFile | O_CLOEXEC, mode: mode),
              let st = try? file.descriptor.fstat() else { return nil }
        return File(fd: file.release(), uid: st.st_uid, gid: st.st_gid, mode: st.st_mode & 0o7777)
    }

    /// Closes a descriptor the pool owns (an unnamed file, which then vanishes, or the root's
    /// duplicate); nothing to report if it fails.
    private static func close(_ fd: Int32) { _ = try? FileDescriptor(adopting: fd).close() }

    /// Closes every pooled file (unnamed, they vanish) and stops refilling; waits for a refill
    /// in flight. Later claims answer nil.
    func drain() {
        let files = state.withLock { s -> [File]? in
            guard !s.closed else { return nil }
            s.closed = true
            defer { s.files.removeAll() }
            return s.files
        }
        guard let files else { return }
        for file in files { Self.close(file.fd) }
        // A refill in flight sees `closed` and closes what it made; after it, nothing uses the
        // directory.
        queue.sync {}
        Self.close(directory.rawValue)
    }
}
