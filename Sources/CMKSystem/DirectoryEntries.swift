import Glibc

/// One directory entry as readdir(3) gives it.
public struct DirectoryEntry: Equatable, Sendable {
    public var name: String
    public var inode: UInt
    /// `d_type` (`DT_REG`, `DT_DIR`, …; `DT_UNKNOWN` where the filesystem does not say).
    public var type: UInt8

    public init(name: String, inode: UInt, type: UInt8) {
        self.name = name
        self.inode = inode
        self.type = type
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
    public init(record: UnsafePointer<dirent>) {
        let nameOffset = MemoryLayout<dirent>.offset(of: \dirent.d_name)!
        let name = String(cString: (UnsafeRawPointer(record) + nameOffset).assumingMemoryBound(to: CChar.self))
        self.init(name: name, inode: UInt(record.pointee.d_ino), type: record.pointee.d_type)
    }
}

/// Reading a directory through readdir(3), without reading past glibc's records; the only
/// reader of `dirent`s outside the FUSE layer's own open directories.
public enum DirectoryEntries {
    /// The entries of `dir` from its current position to its end, "." and ".." included, in
    /// readdir order; a failed readdir(3) throws (a listing cut short is not a listing).
    public static func read(_ dir: OpaquePointer) throws(SystemError) -> [DirectoryEntry] {
        var out: [DirectoryEntry] = []
        while true {
            errno = 0
            guard let record = readdir(dir) else {
                if errno != 0 { throw SystemError("readdir", errno: .current) }
                return out
            }
            out.append(DirectoryEntry(record: record))
        }
    }

    /// The entries of the directory at `path` (opendir(3), read, closedir(3)).
    public static func of(_ path: String) throws(SystemError) -> [DirectoryEntry] {
        guard let dir = opendir(path) else { throw SystemError("opendir", errno: .current, path: path) }
        defer { closedir(dir) }
        return try read(dir)
    }
}
