import Glibc

/// Reading a backing directory through readdir(3), without reading past glibc's records.
public enum BackingDirectory {
    /// One directory entry as readdir(3) gives it.
    public struct Entry: Equatable, Sendable {
        public var name: String
        public var inode: UInt
        /// `d_type` (`DT_REG`, `DT_DIR`, …; `DT_UNKNOWN` where the backing filesystem does not say).
        public var type: UInt8

        public init(name: String, inode: UInt, type: UInt8) {
            self.name = name
            self.inode = inode
            self.type = type
        }
    }

    /// The entries of `dir` from its current position to its end, "." and ".." included, in
    /// readdir order, and 0; or the errno of a failed readdir(3) (a listing cut short is not
    /// a listing).
    public static func entries(_ dir: OpaquePointer) -> ([Entry], Int32) {
        var out: [Entry] = []
        while true {
            errno = 0
            guard let record = readdir(dir) else {
                let e = errno
                return e == 0 ? (out, 0) : ([], e)
            }
            out.append(entry(record))
        }
    }

    /// The entry in the record `record` points to, reading only that record's bytes.
    ///
    /// Why not `record.pointee.d_name`: Swift imports `d_name` as a 256-byte tuple, and using it
    /// as a value (`withUnsafePointer(to:)`, `withUnsafeBytes(of:)`) copies all 256 bytes. But
    /// getdents64 packs records at their own length (`d_reclen`: header, name, NUL, 8-aligned),
    /// not at `sizeof(struct dirent)`, so the copy runs past a short name's record, and for the
    /// last record of a full batch past the end of glibc's buffer: a read of another allocation,
    /// and a SIGSEGV when the buffer ends where the mapped heap does. The name is read from its
    /// address instead, up to its NUL, which is inside the record.
    public static func entry(_ record: UnsafePointer<dirent>) -> Entry {
        let nameOffset = MemoryLayout<dirent>.offset(of: \dirent.d_name)!
        let name = String(cString: (UnsafeRawPointer(record) + nameOffset).assumingMemoryBound(to: CChar.self))
        return Entry(name: name, inode: UInt(record.pointee.d_ino), type: record.pointee.d_type)
    }
}
