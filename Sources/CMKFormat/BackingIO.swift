import Glibc
import CLinuxFS

/// Full-length positional I/O on a backing file descriptor, retrying EINTR and short transfers.
public enum BackingIO {
    /// Reads up to `count` bytes at `offset`; returns fewer only at end of file.
    public static func pread(_ fd: Int32, _ buffer: UnsafeMutableRawPointer, count: Int, offset: Int) throws(ContentError) -> Int {
        var done = 0
        while done < count {
            let n = Glibc.pread(fd, buffer + done, count - done, off_t(offset + done))
            if n < 0 {
                if errno == EINTR { continue }
                throw .io(call: "pread", errno: errno)
            }
            if n == 0 { break }
            done += n
        }
        return done
    }

    /// `pread` for cmkfs's own reads (a partial block read back to be rewritten): the backing
    /// file's access time stays as applications left it, as on a local filesystem, where a
    /// write never touches it. The caller holds the file exclusively: CMKFS_O_NOATIME is a property
    /// of the open file description, shared with readers that must update it.
    public static func preadInternal(_ fd: Int32, _ buffer: UnsafeMutableRawPointer, count: Int, offset: Int) throws(ContentError) -> Int {
        let flags = fcntl(fd, F_GETFL)
        let toggled = flags >= 0 && flags & CMKFS_O_NOATIME == 0 && fcntl(fd, F_SETFL, flags | CMKFS_O_NOATIME) == 0
        defer { if toggled { _ = fcntl(fd, F_SETFL, flags) } }
        return try pread(fd, buffer, count: count, offset: offset)
    }

    /// Writes all `count` bytes at `offset`.
    public static func pwrite(_ fd: Int32, _ buffer: UnsafeRawPointer, count: Int, offset: Int) throws(ContentError) {
        var done = 0
        while done < count {
            let n = Glibc.pwrite(fd, buffer + done, count - done, off_t(offset + done))
            if n < 0 {
                if errno == EINTR { continue }
                throw .io(call: "pwrite", errno: errno)
            }
            done += n
        }
    }

    /// Allocates the disk space of `[offset, offset + count)` without changing the file size,
    /// so a write that extends the file cannot run out of space half way (which would leave a
    /// torn block: the old last block partly overwritten). ENOSPC/EDQUOT are thrown before any
    /// byte is written; filesystems without fallocate are let through.
    public static func reserve(_ fd: Int32, offset: Int, count: Int) throws(ContentError) {
        guard count > 0 else { return }
        while true {
            let rc = cmkfs_reserve(fd, off_t(offset), off_t(count))
            if rc == 0 || rc == EOPNOTSUPP || rc == ENOSYS { return }
            if rc != EINTR { throw .io(call: "fallocate", errno: rc) }
        }
    }

    public static func ftruncate(_ fd: Int32, _ size: Int) throws(ContentError) {
        while Glibc.ftruncate(fd, off_t(size)) != 0 {
            if errno != EINTR { throw .io(call: "ftruncate", errno: errno) }
        }
    }

    /// The backing file's size in bytes.
    public static func size(_ fd: Int32) throws(ContentError) -> Int {
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw .io(call: "fstat", errno: errno) }
        return Int(st.st_size)
    }
}
