import Glibc

/// The exclusive lock the live mount holds on `VOLUME/mount.lock` for as long as it runs, so a
/// volume is never served by two daemons and `status` can tell whether it is mounted. The
/// kernel drops an `flock` when its holder dies, so a crash never leaves a stale lock.
public final class MountLock: Sendable {
    private let fd: Int32

    private init(fd: Int32) { self.fd = fd }
    deinit { close(fd) }

    /// Who holds the lock: the mount daemon's pid and mountpoint.
    public struct Holder: Sendable, Codable, Equatable {
        public var pid: Int32
        public var mountpoint: String
    }

    /// Takes the lock for a mount at `mountpoint`; throws `.alreadyMounted` naming the holder.
    public static func acquire(_ volume: Volume, mountpoint: String) throws(CMKError) -> MountLock {
        let fd = open(volume.lockPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw CMKError(.io, "cannot open \(volume.lockPath): \(String(cString: strerror(errno)))") }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            let holder = readHolder(fd)
            close(fd)
            throw CMKError(.alreadyMounted,
                           "\(volume.path) is already mounted" + (holder.map { " at \($0.mountpoint) (pid \($0.pid))" } ?? ""),
                           hint: holder.map { "unmount it first: cmkfs unmount \($0.mountpoint)" })
        }
        let text = "\(getpid())\n\(mountpoint)\n"
        ftruncate(fd, 0)
        _ = text.withCString { pwrite(fd, $0, strlen($0), 0) }
        return MountLock(fd: fd)
    }

    /// The live mount of the volume at `volumePath`, or nil when it is not mounted.
    public static func holder(volumePath: String) -> Holder? {
        let fd = open(volumePath + "/mount.lock", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        if flock(fd, LOCK_SH | LOCK_NB) == 0 {
            flock(fd, LOCK_UN)
            return nil
        }
        return readHolder(fd) ?? Holder(pid: 0, mountpoint: "?")
    }

    private static func readHolder(_ fd: Int32) -> Holder? {
        var buffer = [UInt8](repeating: 0, count: 4096)
        let n = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }
        guard n > 0 else { return nil }
        let lines = String(decoding: buffer[0..<n], as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false)
        guard lines.count >= 2, let pid = Int32(lines[0]) else { return nil }
        return Holder(pid: pid, mountpoint: String(lines[1]))
    }
}
