import Glibc
import CFuse3
import CMKCrypto
import CMKFormat

extension FileSystem {
    func open(_ rel: String, flags: Int32) -> (UInt64, Int32) {
        let (file, rc) = acquire(rel)
        guard let file else { return (0, rc) }
        if flags & O_TRUNC != 0 {
            let trc = truncate(file, to: 0, rel: rel)
            if trc != 0 { openFiles.release(file); return (0, trc) }
        }
        return (handles.add(Handle(file: file, append: flags & O_APPEND != 0, path: rel)), 0)
    }

    func create(_ rel: String, mode: mode_t, flags: Int32) -> (UInt64, Int32) {
        let (file, rc) = createFile(rel, mode: mode, exclusive: flags & O_EXCL != 0)
        guard let file else { return (0, rc) }
        return (handles.add(Handle(file: file, append: flags & O_APPEND != 0, path: rel)), 0)
    }

    func release(_ fh: UInt64) -> Int32 {
        guard let handle = handles.remove(fh) else { return -EBADF }
        openFiles.release(handle.file)
        return 0
    }

    func read(_ fh: UInt64, into buffer: UnsafeMutableRawBufferPointer, at offset: Int) -> Int32 {
        guard let handle = handles.get(fh) else { return -EBADF }
        let file = handle.file
        do {
            let n = try file.content.withReadLock { () throws(ContentError) -> Int in
                try scratch.with { s throws(ContentError) in
                    try file.file.read(into: buffer, at: offset, size: file.size, key: file.key, scratch: s)
                }
            }
            return Int32(n)
        } catch {
            Self.log("read \(handle.path) (file \(file.file.fileID)) at \(offset): \(error)")
            return -error.errno
        }
    }

    func write(_ fh: UInt64, _ data: UnsafeRawBufferPointer, at offset: Int) -> Int32 {
        guard let handle = handles.get(fh) else { return -EBADF }
        let file = handle.file
        do {
            try file.content.withWriteLock { () throws(ContentError) in
                let at = handle.append ? file.size : offset
                file.size = try scratch.with { s throws(ContentError) in
                    try file.file.write(data, at: at, size: file.size, key: file.key, scratch: s)
                }
            }
            return Int32(data.count)
        } catch {
            Self.log("write \(handle.path) (file \(file.file.fileID)) at \(offset): \(error)")
            return -error.errno
        }
    }

    /// truncate(2) and ftruncate(2).
    func truncate(_ rel: String?, fh: UInt64?, to size: Int) -> Int32 {
        guard size >= 0 else { return -EINVAL }
        if let fh, let handle = handles.get(fh) { return truncate(handle.file, to: size, rel: handle.path) }
        guard let rel else { return -EBADF }
        let (file, rc) = acquire(rel)
        guard let file else { return rc }
        defer { openFiles.release(file) }
        return truncate(file, to: size, rel: rel)
    }

    func truncate(_ file: OpenFile, to newSize: Int, rel: String) -> Int32 {
        do {
            try file.content.withWriteLock { () throws(ContentError) in
                try scratch.with { s throws(ContentError) in
                    try file.file.truncate(from: file.size, to: newSize, key: file.key, scratch: s)
                }
                file.size = newSize
            }
            return 0
        } catch {
            Self.log("truncate \(rel) (file \(file.file.fileID)) to \(newSize): \(error)")
            return -error.errno
        }
    }

    /// fsync(2)/fdatasync(2): the content, then the key rows, so a synced file is never left
    /// without its key after a power cut.
    func fsync(_ fh: UInt64, dataOnly: Bool) -> Int32 {
        guard let handle = handles.get(fh) else { return -EBADF }
        let rc = dataOnly ? fdatasync(handle.file.fd) : Glibc.fsync(handle.file.fd)
        if rc != 0 { return -errno }
        do { try volume.metadata.makeDurable() } catch {
            Self.log("fsync \(handle.path): metadata: \(error)")
            return -EIO
        }
        return 0
    }

    /// fallocate(2): reserving space is honest (the backing range is allocated and reads as a
    /// hole); punching holes and collapsing ranges are not offered.
    func fallocate(_ fh: UInt64, mode: Int32, offset: Int, length: Int) -> Int32 {
        guard let handle = handles.get(fh) else { return -EBADF }
        guard offset >= 0, length > 0 else { return -EINVAL }
        guard mode & ~FALLOC_FL_KEEP_SIZE == 0 else { return -EOPNOTSUPP }
        let file = handle.file
        let layout = volume.layout
        do {
            return try file.content.withWriteLock { () throws(ContentError) -> Int32 in
                let end = offset + length
                let diskStart = layout.diskOffset(ofBlock: offset / layout.blockSize)
                let diskEnd = layout.backingSize(plaintextSize: max(end, file.size))
                if cmkfs_fallocate(file.fd, FALLOC_FL_KEEP_SIZE, off_t(diskStart), off_t(diskEnd - diskStart)) != 0 {
                    return -errno
                }
                if mode & FALLOC_FL_KEEP_SIZE == 0 && end > file.size {
                    try scratch.with { s throws(ContentError) in
                        try file.file.truncate(from: file.size, to: end, key: file.key, scratch: s)
                    }
                    file.size = end
                }
                return 0
            }
        } catch {
            Self.log("fallocate \(handle.path): \(error)")
            return -error.errno
        }
    }
}
