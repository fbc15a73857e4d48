import Glibc
import CLinux

/// A kernel file handle (name_to_handle_at(2)): names a backing object across opens without
/// holding a descriptor on it, and carries the inode's generation, so two handles are equal only
/// for the very same object (an inode number reused after a delete gets a different handle).
/// The bytes are `struct file_handle` as the kernel filled it: handle_bytes, handle_type, then
/// the handle.
public struct FileHandle: Hashable, Sendable {
    public let bytes: [UInt8]

    /// Whether the handle says it is of inode number `inode`: only a handle of the kernel's
    /// generic 32-bit inode-and-generation type (`FILEID_INO32_GEN`, ext2/3/4's and others')
    /// carries the number where it can be read; false for every other type.
    public func names(inode: UInt) -> Bool {
        let fileIDIno32Gen: Int32 = 1
        guard bytes.count >= 16 else { return false }
        return bytes.withUnsafeBytes { raw in
            raw.load(fromByteOffset: 4, as: Int32.self) == fileIDIno32Gen && UInt(raw.load(fromByteOffset: 8, as: UInt32.self)) == inode
        }
    }

    /// open_by_handle_at(2) with `mount` as the mount descriptor (not an `O_PATH` one: the
    /// kernel refuses it). Needs CAP_DAC_READ_SEARCH; ESTALE when the object is gone.
    public func open(mount: Descriptor, flags: Int32) throws(SystemError) -> FileDescriptor {
        let fd = try Retry.check("open_by_handle_at") {
            bytes.withUnsafeBytes { cmkfs_open_by_handle(mount.rawValue, UnsafeMutableRawPointer(mutating: $0.baseAddress), flags) }
        }
        return FileDescriptor(adopting: fd)
    }
}

extension Descriptor {
    /// name_to_handle_at(2) of `path` here ("" with `OpenFlags.atEmptyPath` for the object
    /// this descriptor names). EOPNOTSUPP where the filesystem has no file handles.
    public func fileHandle(_ path: String, flags: Int32 = 0) throws(SystemError) -> FileHandle {
        while true {
            if let raw = cmkfs_name_to_handle(rawValue, path, flags) {
                defer { free(raw) }
                // struct file_handle: the handle's length, its type, then the handle.
                let length = 8 + Int(raw.load(as: UInt32.self))
                return FileHandle(bytes: Array(UnsafeRawBufferPointer(start: raw, count: length)))
            }
            if Glibc.errno == Glibc.EINTR { continue }
            throw SystemError("name_to_handle_at", errno: .current, path: path)
        }
    }
}
