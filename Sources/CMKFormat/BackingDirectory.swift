import Glibc
import CMKSystem

/// Reading a backing directory: CMKSystem's readdir(3) reader (`DirectoryEntries`), which
/// never reads past glibc's records.
public enum BackingDirectory {
    /// One directory entry as readdir(3) gives it.
    public typealias Entry = DirectoryEntry

    /// The entries of `dir` from its current position to its end, "." and ".." included, in
    /// readdir order; a failed readdir(3) throws its errno (a listing cut short is not a listing).
    public static func entries(_ dir: OpaquePointer) throws(SystemError) -> [Entry] {
        try DirectoryEntries.read(dir)
    }

    /// The entry in the record `record` points to, reading only that record's bytes
    /// (`DirectoryEntry.init(record:)` says why).
    public static func entry(_ record: UnsafePointer<dirent>) -> Entry { Entry(record: record) }
}
