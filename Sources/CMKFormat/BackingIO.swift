import Glibc
import CMKSystem

/// Full-length positional I/O on a backing file descriptor: CMKSystem's calls (EINTR retried
/// there, short transfers looped) with the failure as a `ContentError`.
public enum BackingIO {
    /// Reads up to `count` bytes at `offset`; returns fewer only at end of file.
    public static func pread(_ fd: Int32, _ buffer: UnsafeMutableRawPointer, count: Int, offset: Int) throws(ContentError) -> Int {
        do { return try Descriptor(rawValue: fd).preadFully(into: UnsafeMutableRawBufferPointer(start: buffer, count: count), at: offset) }
        catch { throw .io(call: error.call, errno: error.errno.rawValue) }
    }

    /// `pread` for cmkfs's own reads (a partial block read back to be rewritten): the backing
    /// file's access time stays as applications left it, as on a local filesystem, where a
    /// write never touches it. The caller holds the file exclusively: O_NOATIME is a property
    /// of the open file description, shared with readers that must update it.
    public static func preadInternal(_ fd: Int32, _ buffer: UnsafeMutableRawPointer, count: Int, offset: Int) throws(ContentError) -> Int {
        let file = Descriptor(rawValue: fd)
        let flags = try? file.statusFlags()
        var toggled = false
        if let flags, flags & OpenFlags.noAccessTime == 0 {
            toggled = (try? file.setStatusFlags(flags | OpenFlags.noAccessTime)) != nil
        }
        defer { if toggled, let flags { try? file.setStatusFlags(flags) } }
        return try pread(fd, buffer, count: count, offset: offset)
    }

    /// Writes all `count` bytes at `offset`.
    public static func pwrite(_ fd: Int32, _ buffer: UnsafeRawPointer, count: Int, offset: Int) throws(ContentError) {
        do { try Descriptor(rawValue: fd).pwriteAll(UnsafeRawBufferPointer(start: buffer, count: count), at: offset) }
        catch { throw .io(call: error.call, errno: error.errno.rawValue) }
    }

    /// Allocates the disk space of `[offset, offset + count)` without changing the file size,
    /// so a write that extends the file cannot run out of space half way (which would leave a
    /// torn block: the old last block partly overwritten). ENOSPC/EDQUOT are thrown before any
    /// byte is written; filesystems without fallocate are let through.
    public static func reserve(_ fd: Int32, offset: Int, count: Int) throws(ContentError) {
        guard count > 0 else { return }
        do { try Descriptor(rawValue: fd).fallocate(mode: Descriptor.keepSize, offset: offset, length: count) } catch {
            if error.errno == .EOPNOTSUPP || error.errno == .ENOSYS { return }
            throw .io(call: error.call, errno: error.errno.rawValue)
        }
    }

    public static func ftruncate(_ fd: Int32, _ size: Int) throws(ContentError) {
        do { try Descriptor(rawValue: fd).ftruncate(size) }
        catch { throw .io(call: error.call, errno: error.errno.rawValue) }
    }

    /// The backing file's size in bytes.
    public static func size(_ fd: Int32) throws(ContentError) -> Int {
        do { return Int(try Descriptor(rawValue: fd).fstat().st_size) }
        catch { throw .io(call: error.call, errno: error.errno.rawValue) }
    }
}
