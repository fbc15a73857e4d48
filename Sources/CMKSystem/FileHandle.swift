import Glibc
import CLinux

/// A kernel file handle (name_to_handle_at(2)): names a backing object across opens without
/// holding a descriptor on it, and carries the inode's generation, so two handles are equal only
/// for the very same object (an inode number reused after a delete gets a different handle).
/// The bytes are `struct file_handle` as the kernel filled it: handle_bytes, handle_type, then
/// the handle.
///
/// The mount keeps one per inode the kernel knows (hundreds of thousands), so a handle of up to
/// 16 bytes (ext4's, and every `FILEID_INO32_GEN` one: an 8-byte header and 8 bytes of handle)
/// is kept in two words, not in an array of its own (48 bytes of heap and a malloc header per
/// handle); a longer one (btrfs, XFS with 64-bit inodes, tmpfs) is kept in an array.
public struct FileHandle: Hashable, Sendable {
    private enum Storage: Hashable, Sendable {
        /// The bytes in memory order, zero past the handle's length (so equal handles are equal
        /// words); the length is the header's handle_bytes.
        case inline(UInt64, UInt64)
        case heap([UInt8])
    }
    private let storage: Storage

    /// The largest handle kept inline, header included.
    public static let inlineCapacity = 16

    /// The handle whose `struct file_handle` is `bytes` (the header's handle_bytes, plus 8).
    public init(bytes: [UInt8]) {
        guard bytes.count <= Self.inlineCapacity else {
            storage = .heap(bytes)
            return
        }
        var words: (UInt64, UInt64) = (0, 0)
        withUnsafeMutableBytes(of: &words) { words in bytes.withUnsafeBytes { words.copyMemory(from: $0) } }
        storage = .inline(words.0, words.1)
    }

    /// The `struct file_handle` bytes.
    public var bytes: [UInt8] { withUnsafeBytes { Array($0) } }

    /// Whether the handle is kept in two words rather than on the heap.
    public var isInline: Bool {
        if case .inline = storage { return true }
        return false
    }

    /// Runs `body` with the `struct file_handle` bytes.
    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) -> R) -> R {
        switch storage {
        case .heap(let bytes):
            return bytes.withUnsafeBytes(body)
        case .inline(let first, let second):
            let words = (first, second)
            return Swift.withUnsafeBytes(of: words) { raw in
                let length = 8 + Int(raw.load(as: UInt32.self))
                return body(UnsafeRawBufferPointer(rebasing: raw[0..<min(length, Self.inlineCapacity)]))
            }
        }
    }

    /// Whether the handle says it is of inode number `inode`: only a handle of the kernel's
    /// generic 32-bit inode-and-generation type (`FILEID_INO32_GEN`, ext2/3/4's and others')
    /// carries the number where it can be read; false for every other type.
    public func names(inode: UInt) -> Bool {
        let fileIDIno32Gen: Int32 = 1
        return withUnsafeBytes { raw in
            guard raw.count >= 16 else { return false }
            return raw.load(fromByteOffset: 4, as: Int32.self) == fileIDIno32Gen && UInt(raw.load(fromByteOffset: 8, as: UInt32.self)) == inode
        }
    }

    /// open_by_handle_at(2) with `mount` as the mount descriptor (not an `O_PATH` one: the
    /// kernel refuses it). Needs CAP_DAC_READ_SEARCH; ESTALE when the object is gone.
    public func open(mount: Descriptor, flags: Int32) throws(SystemError) -> FileDescriptor {
        let fd = try Retry.check("open_by_handle_at") {
            withUnsafeBytes { cmkfs_open_by_handle(mount.rawValue, UnsafeMutableRawPointer(mutating: $0.baseAddress), flags) }
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
