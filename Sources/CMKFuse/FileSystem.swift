import Glibc
import Synchronization
import CFuse3
import CMKCrypto
import CMKFormat
import CMKVolume

/// The mounted filesystem's state: the volume, the backing tree's root descriptor, open files
/// and handles. Operations return 0 or a negated errno, as libfuse expects; only `FuseCallbacks`
/// talks to libfuse.
public final class FileSystem: Sendable {
    let volume: Volume
    /// The backing tree's root; every backing path is resolved relative to it (`*at` calls).
    let rootFD: Int32
    let openFiles = OpenFileTable()
    let handles = HandleTable()
    let scratch: ScratchPool
    /// Serializes unlink, rename and link so "is this the last link?" and the removal of the
    /// file's key rows cannot interleave with a new link to the same inode.
    let namespaceLock = Mutex(())

    public init(volume: Volume) throws(CMKError) {
        self.volume = volume
        rootFD = Glibc.open(volume.dataPath, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard rootFD >= 0 else {
            throw CMKError(.notAVolume, "cannot open \(volume.dataPath): \(String(cString: strerror(errno)))")
        }
        scratch = ScratchPool(layout: volume.layout)
    }

    deinit { close(rootFD) }

    /// Number of open backing inodes (for tests and status).
    public var openFileCount: Int { openFiles.count }

    // MARK: helpers

    /// A FUSE path ("/a/b") as a path relative to `rootFD` ("a/b"; the root is ".").
    static func relative(_ path: UnsafePointer<CChar>) -> String {
        var p = String(cString: path)
        while p.hasPrefix("/") { p.removeFirst() }
        return p.isEmpty ? "." : p
    }

    /// The calling process's uid and gid, as the kernel reported them for this request.
    static func caller() -> (uid: uid_t, gid: gid_t) {
        guard let ctx = fuse_get_context() else { return (0, 0) }
        return (ctx.pointee.uid, ctx.pointee.gid)
    }

    func lstat(_ rel: String) -> (stat, Int32) {
        var st = stat()
        let rc = fstatat(rootFD, rel, &st, AT_SYMLINK_NOFOLLOW)
        return (st, rc == 0 ? 0 : -errno)
    }

    /// Backing stat → what applications see: a regular file's size is its plaintext size.
    func present(_ st: inout stat) {
        if (st.st_mode & S_IFMT) == S_IFREG {
            st.st_size = off_t(volume.layout.displaySize(backingSize: Int(st.st_size)))
        }
    }

    /// Gives a new entry to the caller, as the kernel would for a local filesystem.
    func chownToCaller(_ rel: String) {
        let c = Self.caller()
        _ = fchownat(rootFD, rel, c.uid, c.gid, AT_SYMLINK_NOFOLLOW)
    }

    /// One line on stderr (the mount log when daemonized), prefixed with the pid.
    public static func log(_ message: String) {
        let line = "cmkfs[\(getpid())]: \(message)\n"
        _ = line.withCString { Glibc.write(2, $0, strlen($0)) }
    }

    // MARK: opening files

    /// Opens the regular file at `rel` and returns its shared state with a new reference.
    func acquire(_ rel: String) -> (OpenFile?, Int32) {
        let fd = openAt(rel, relativeTo: rootFD, flags: O_RDWR | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else { return (nil, -errno) }
        return acquire(fd: fd, rel: rel)
    }

    /// Shares or builds the `OpenFile` for the inode behind `fd` (consumed).
    func acquire(fd: Int32, rel: String) -> (OpenFile?, Int32) {
        var st = stat()
        guard fstat(fd, &st) == 0 else { let e = errno; close(fd); return (nil, -e) }
        guard (st.st_mode & S_IFMT) == S_IFREG else { close(fd); return (nil, -EINVAL) }
        let identity = InodeIdentity(device: UInt(st.st_dev), inode: UInt(st.st_ino))
        if let existing = openFiles.retain(identity) {
            close(fd)
            return (existing, 0)
        }
        // Unwrapping may call out to the key provider: no lock is held here.
        let fileID: FileID
        do { fileID = try ContentFile.readFileID(fd: fd) } catch {
            Self.log("\(rel): \(error)")
            close(fd)
            return (nil, -error.errno)
        }
        let key: SecretBytes
        do { key = try volume.fileKey(fileID) } catch {
            Self.log("\(rel): cannot get the data key of file \(fileID): \(error)")
            close(fd)
            return (nil, -error.errno)
        }
        let file = OpenFile(fd: fd, file: ContentFile(fd: fd, fileID: fileID, layout: volume.layout), key: key,
                            identity: identity, size: volume.layout.displaySize(backingSize: Int(st.st_size)))
        return (openFiles.insert(file), 0)
    }

    /// Creates a new encrypted file: key row first, then the header, so a crash never leaves a
    /// file whose key is missing.
    func createFile(_ rel: String, mode: mode_t, exclusive: Bool) -> (OpenFile?, Int32) {
        let fd = openAt(rel, relativeTo: rootFD, flags: O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode: mode & 0o7777)
        if fd < 0 {
            let e = errno
            if e == EEXIST && !exclusive { return acquire(rel) }
            return (nil, -e)
        }
        let c = Self.caller()
        _ = fchown(fd, c.uid, c.gid)
        let fileID: FileID
        do { fileID = try FileID.random() } catch {
            return abandon(fd, rel, nil, -EIO)
        }
        let key: SecretBytes
        do { key = try volume.createFileKey(fileID) } catch {
            Self.log("\(rel): cannot create a data key: \(error)")
            return abandon(fd, rel, nil, -error.errno)
        }
        let content = ContentFile(fd: fd, fileID: fileID, layout: volume.layout)
        do { try content.writeHeader() } catch {
            return abandon(fd, rel, fileID, -error.errno)
        }
        var st = stat()
        fstat(fd, &st)
        let file = OpenFile(fd: fd, file: content, key: key,
                            identity: InodeIdentity(device: UInt(st.st_dev), inode: UInt(st.st_ino)), size: 0)
        return (openFiles.insert(file), 0)
    }

    private func abandon(_ fd: Int32, _ rel: String, _ fileID: FileID?, _ error: Int32) -> (OpenFile?, Int32) {
        close(fd)
        unlinkat(rootFD, rel, 0)
        if let fileID { try? volume.forgetFile(fileID) }
        return (nil, error)
    }

    /// The file id in the header of the regular file at `rel` if this is its last link.
    func lastLinkFileID(_ rel: String) -> FileID? {
        let (st, rc) = lstat(rel)
        guard rc == 0, (st.st_mode & S_IFMT) == S_IFREG, st.st_nlink == 1 else { return nil }
        let fd = openAt(rel, relativeTo: rootFD, flags: O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        return try? ContentFile.readFileID(fd: fd)
    }
}

/// `openat` (C `open` is variadic).
func openAt(_ rel: String, relativeTo dir: Int32, flags: Int32, mode: mode_t = 0) -> Int32 {
    while true {
        let fd = openat(dir, rel, flags, mode)
        if fd >= 0 || errno != EINTR { return fd }
    }
}
