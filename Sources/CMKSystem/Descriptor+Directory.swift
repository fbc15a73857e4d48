import Glibc

/// Directories and the filesystem a descriptor is on.
extension Descriptor {
    /// Runs `body` with a readdir(3) stream over this directory, read from its start. The
    /// stream is over a duplicate (fdopendir takes its descriptor over, closedir closes it), so
    /// this descriptor stays open; the duplicate shares the file offset, hence the rewind.
    public func withDirectoryStream<R>(_ body: (OpaquePointer) throws(SystemError) -> R) throws(SystemError) -> R {
        let copy = try duplicate()
        guard let stream = fdopendir(copy.rawValue) else { throw SystemError("fdopendir", errno: .current) }
        // closedir closes the descriptor the stream took over.
        _ = copy.release()
        defer { closedir(stream) }
        rewinddir(stream)
        return try body(stream)
    }

    /// This directory's entries from its start, "." and ".." included, in readdir order
    /// (`DirectoryEntries.read`); the descriptor stays open and may be listed again.
    public func entries() throws(SystemError) -> [DirectoryEntry] {
        try withDirectoryStream { stream throws(SystemError) in try DirectoryEntries.read(stream) }
    }

    /// fstatvfs(2): the statistics of the filesystem this descriptor is on.
    public func statfs() throws(SystemError) -> statvfs {
        var st = statvfs()
        _ = try Retry.check("fstatvfs") { fstatvfs(rawValue, &st) }
        return st
    }
}
