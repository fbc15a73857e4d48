import Glibc
import CMKCrypto
import CMKFormat
import CMKMetadata

/// User extended attributes of regular files. Values are sealed with the file's DEK (AES-256-GCM,
/// AAD binding file id and name) and kept in the metadata database, never in the backing tree.
/// Other namespaces (security, system, trusted) and non-regular files answer ENOTSUP.
extension FileSystem {
    static let maxXattrValue = 64 * 1024

    private static func userNamespace(_ name: String) -> Bool { name.hasPrefix("user.") && name.count > 5 }

    private static func aad(_ fileID: FileID, _ name: String) -> [UInt8] {
        Array("cmkfs.xattr.v1".utf8) + fileID.bytes + Array(name.utf8)
    }

    func setxattr(_ rel: String, name: String, value: UnsafeRawBufferPointer, flags: Int32) -> Int32 {
        guard Self.userNamespace(name) else { return -ENOTSUP }
        guard value.count <= Self.maxXattrValue else { return -E2BIG }
        let (file, rc) = acquireRegular(rel)
        guard let file else { return rc }
        defer { openFiles.release(file) }
        // XATTR_CREATE (1) and XATTR_REPLACE (2) from <sys/xattr.h>.
        let mode: XattrSetMode = flags & 1 != 0 ? .create : flags & 2 != 0 ? .replace : .any
        let sealed: [UInt8]
        do {
            sealed = try file.key.withUnsafeBytes { k throws(CryptoError) in
                try AESGCM().sealRecord(key: k, aad: Self.aad(file.file.fileID, name), plaintext: value)
            }
        } catch { return -EIO }
        return xattrResult { try volume.metadata.setXattr(fileId: file.file.fileID.bytes, name: name, value: sealed, mode: mode) }
    }

    func getxattr(_ rel: String, name: String, into buffer: UnsafeMutableRawBufferPointer) -> Int32 {
        guard Self.userNamespace(name) else { return nonRegularOr(rel, -ENODATA) }
        let (file, rc) = acquireRegular(rel)
        guard let file else { return rc == -ENOTSUP ? -ENODATA : rc }
        defer { openFiles.release(file) }
        let sealed: [UInt8]?
        do { sealed = try volume.metadata.xattr(fileId: file.file.fileID.bytes, name: name) } catch { return -EIO }
        guard let sealed else { return -ENODATA }
        let length = sealed.count - AESGCM.nonceSize - AESGCM.tagSize
        guard length >= 0 else { return -EIO }
        if buffer.count == 0 { return Int32(length) }
        guard buffer.count >= length else { return -ERANGE }
        if length == 0 { return 0 }
        do {
            let plain = try file.key.withUnsafeBytes { k throws(CryptoError) in
                try AESGCM().openRecord(key: k, aad: Self.aad(file.file.fileID, name), record: sealed)
            }
            plain.withUnsafeBytes { buffer.baseAddress!.copyMemory(from: $0.baseAddress!, byteCount: length) }
        } catch {
            Self.log("getxattr \(rel) \(name): value failed authentication")
            return -EIO
        }
        return Int32(length)
    }

    func listxattr(_ rel: String, into buffer: UnsafeMutableRawBufferPointer) -> Int32 {
        guard let fileID = regularFileID(rel) else { return nonRegularOr(rel, 0) }
        let names: [String]
        do { names = try volume.metadata.xattrNames(fileId: fileID.bytes) } catch { return -EIO }
        var bytes = [UInt8]()
        for name in names { bytes += Array(name.utf8) + [0] }
        if buffer.count == 0 { return Int32(bytes.count) }
        guard buffer.count >= bytes.count else { return -ERANGE }
        buffer.copyBytes(from: bytes)
        return Int32(bytes.count)
    }

    func removexattr(_ rel: String, name: String) -> Int32 {
        guard Self.userNamespace(name) else { return -ENOTSUP }
        guard let fileID = regularFileID(rel) else { return nonRegularOr(rel, -ENOTSUP) }
        return xattrResult { try volume.metadata.removeXattr(fileId: fileID.bytes, name: name) }
    }

    // MARK: helpers

    private func xattrResult(_ body: () throws -> Void) -> Int32 {
        do {
            try body()
            return 0
        } catch let error as MetadataError {
            switch error {
            case .exists: return -EEXIST
            case .notFound: return -ENODATA
            case .full: return -ENOSPC
            default: return -EIO
            }
        } catch { return -EIO }
    }

    /// `acquire` for regular files only: anything else is ENOTSUP, not EINVAL.
    private func acquireRegular(_ rel: String) -> (OpenFile?, Int32) {
        let (st, rc) = lstat(rel)
        guard rc == 0 else { return (nil, rc) }
        guard (st.st_mode & S_IFMT) == S_IFREG else { return (nil, -ENOTSUP) }
        return acquire(rel)
    }

    private func regularFileID(_ rel: String) -> FileID? {
        let fd = openAt(rel, relativeTo: rootFD, flags: O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { return nil }
        return try? ContentFile.readFileID(fd: fd)
    }

    /// The errno for a path that is not a readable regular file: its lstat error, or `otherwise`.
    private func nonRegularOr(_ rel: String, _ otherwise: Int32) -> Int32 {
        let rc = lstat(rel).1
        return rc != 0 ? rc : otherwise
    }
}
