import Glibc

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
