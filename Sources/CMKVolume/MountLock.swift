import Glibc
import CMKSystem

/// The exclusive lock the live mount holds on `VOLUME/mount.lock` for as long as it runs, so a
/// volume is never served by two daemons and `status` can tell whether it is mounted. The
/// kernel drops an `flock` when its holder dies, so a crash never leaves a stale lock.
public final class MountLock: Sendable {
    private let file: FileDescriptor

    private init(file: consuming FileDescriptor) { self.file = file }

    /// Who holds the lock: the mount daemon's pid and mountpoint.
    public struct Holder: Sendable, Codable, Equatable {
        public var pid: Int32
        public var mountpoint: String
    }

    /// Takes the lock for a mount at `mountpoint`; throws `.alreadyMounted` naming the holder.
    public static func acquire(_ volume: Volume, mountpoint: String) throws(CMKError) -> MountLock {
        let file: FileDescriptor
        do { file = try FileDescriptor.open(volume.lockPath, O_RDWR | O_CREAT | O_CLOEXEC, mode: 0o600) } catch {
            throw CMKError(.io, "cannot open \(volume.lockPath): \(error.errno)")
        }
        guard (try? file.descriptor.lock(LOCK_EX | LOCK_NB)) != nil else {
            let holder = readHolder(file.descriptor)
            throw CMKError(.alreadyMounted,
                           "\(volume.path) is already mounted" + (holder.map { " at \($0.mountpoint) (pid \($0.pid))" } ?? ""),
                           hint: holder.map { "unmount it first: cmkfs unmount \($0.mountpoint)" })
        }
        let text = "\(getpid())\n\(mountpoint)\n"
        try? file.descriptor.ftruncate(0)
        try? file.descriptor.pwriteAll(Array(text.utf8), at: 0)
        return MountLock(file: file)
    }

    /// The live mount of the volume at `volumePath`, or nil when it is not mounted.
    public static func holder(volumePath: String) -> Holder? {
        guard let file = try? FileDescriptor.open(volumePath + "/mount.lock", O_RDONLY | O_CLOEXEC) else { return nil }
        if (try? file.descriptor.lock(LOCK_SH | LOCK_NB)) != nil {
            try? file.descriptor.lock(LOCK_UN)
            return nil
        }
        return readHolder(file.descriptor) ?? Holder(pid: 0, mountpoint: "?")
    }

    private static func readHolder(_ fd: Descriptor) -> Holder? {
        guard let bytes = try? fd.preadFully(count: 4096, at: 0), !bytes.isEmpty else { return nil }
        let lines = String(decoding: bytes, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false)
        guard lines.count >= 2, let pid = Int32(lines[0]) else { return nil }
        return Holder(pid: pid, mountpoint: String(lines[1]))
    }
}
