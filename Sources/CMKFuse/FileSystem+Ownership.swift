import Glibc
import Foundation
import CMKSystem

/// The owner and mode of a new entry, as a local filesystem gives them.
///
/// The kernel has already applied the caller's umask to the mode it sends (the mount does not ask
/// for FUSE_CAP_DONT_MASK), so the mode is final. The daemon creates the backing entry as root,
/// which brings two distortions this file undoes: the daemon's own umask masks the mode a second
/// time, and the `chown` to the caller clears the set-id bits of a non-directory (chown(2) does
/// that even for root). Both are fixed with one `chmod`, made only when one of them applied, so
/// the common create (caller and daemon umasks agree, no set-id bits) costs no extra system call.
extension FileSystem {
    /// The daemon's umask, read once from /proc (umask(2) can only be read by setting it, which
    /// would race with creates on other threads).
    static let daemonUmask: mode_t = {
        let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
        let line = status.split(separator: "\n").first { $0.hasPrefix("Umask:") }
        let value = line.flatMap { mode_t($0.dropFirst("Umask:".count).trimmingCharacters(in: .whitespaces), radix: 8) }
        return value ?? 0o022
    }()

    /// Who a new entry in `dir` belongs to: the caller, with the directory's group when the
    /// directory is set-group-ID (the backing filesystem already gave it that group; `gid_t.max`
    /// leaves it), else the caller's group.
    func newOwner(in dir: Node, _ caller: Caller) -> (uid: uid_t, gid: gid_t, inheritsGroup: Bool) {
        let setgidParent = (try? dir.descriptor.fstat()).map { $0.st_mode & S_ISGID != 0 } ?? false
        return (caller.uid, setgidParent ? gid_t.max : caller.gid, setgidParent)
    }

    /// Gives the new entry `name` in `dir` (not a symlink) to the caller, with exactly `mode`.
    func settle(_ dir: Node, _ name: String, mode: mode_t, isDirectory: Bool, caller: Caller) {
        let owner = newOwner(in: dir, caller)
        let chowned = needsChown(owner)
        if chowned { try? dir.descriptor.chown(name, uid: owner.uid, gid: owner.gid, flags: AT_SYMLINK_NOFOLLOW) }
        // A new directory in a set-group-ID directory is set-group-ID too (the backing mkdir did it).
        let wanted = mode & 0o7777 | (isDirectory && owner.inheritsGroup ? S_ISGID : 0)
        if needsChmod(wanted, chowned: chowned, isDirectory: isDirectory) { try? dir.descriptor.chmod(name, mode: wanted) }
    }

    /// `settle` for a file open at `fd` (an unnamed O_TMPFILE file).
    func settle(fd: Int32, in dir: Node, mode: mode_t, caller: Caller) {
        let owner = newOwner(in: dir, caller)
        let chowned = needsChown(owner)
        let file = Descriptor(rawValue: fd)
        if chowned { try? file.fchown(owner.uid, owner.gid) }
        let wanted = mode & 0o7777
        if needsChmod(wanted, chowned: chowned, isDirectory: false) { try? file.fchmod(wanted) }
    }

    /// `settle` for a file from the pool of unnamed files, made by the daemon in the backing
    /// root: it gets the owner, group and mode the same create would have given a file made in
    /// `dir` (the directory's group when `dir` is set-group-ID, as the backing filesystem would
    /// have given it), with a chown or chmod only where the pooled file differs, and the access
    /// time of now. A new file's times are those of its create (POSIX); the header the create
    /// writes next sets the modification and change times, but not the access time, which was
    /// the moment the pool made the file — seconds, or on an idle mount hours, before.
    func settle(pooled file: UnnamedFilePool.File, in dir: Node, mode: mode_t, caller: Caller) {
        let parent = try? dir.descriptor.fstat()
        let gid = parent.flatMap { $0.st_mode & S_ISGID != 0 ? $0.st_gid : nil } ?? caller.gid
        let descriptor = Descriptor(rawValue: file.fd)
        try? descriptor.setTimes("", access: timespec(tv_sec: 0, tv_nsec: utimeNow),
                                 modification: timespec(tv_sec: 0, tv_nsec: utimeOmit), flags: OpenFlags.atEmptyPath)
        let chowned = file.uid != caller.uid || file.gid != gid
        if chowned { try? descriptor.fchown(caller.uid, gid) }
        let wanted = mode & 0o7777
        // chown(2) clears the set-id bits, even for root.
        if wanted != file.mode || (chowned && wanted & (S_ISUID | S_ISGID) != 0) { try? descriptor.fchmod(wanted) }
    }

    /// Gives the new symlink `name` in `dir` to the caller (a symlink has no mode of its own).
    func settleSymlink(_ dir: Node, _ name: String, caller: Caller) {
        let owner = newOwner(in: dir, caller)
        if needsChown(owner) { try? dir.descriptor.chown(name, uid: owner.uid, gid: owner.gid, flags: AT_SYMLINK_NOFOLLOW) }
    }

    /// The daemon made the entry as itself: a chown is needed unless the caller is the daemon's
    /// own user and group.
    private func needsChown(_ owner: (uid: uid_t, gid: gid_t, inheritsGroup: Bool)) -> Bool {
        owner.uid != geteuid() || (owner.gid != gid_t.max && owner.gid != getegid())
    }

    private func needsChmod(_ wanted: mode_t, chowned: Bool, isDirectory: Bool) -> Bool {
        wanted & Self.daemonUmask != 0 || (chowned && !isDirectory && wanted & (S_ISUID | S_ISGID) != 0)
    }
}
