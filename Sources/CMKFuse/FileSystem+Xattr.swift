import Logging
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

    func setxattr(_ inode: Node, name: String, value: UnsafeRawBufferPointer, flags: Int32, caller: Caller? = nil) -> Int32 {
        guard Self.userNamespace(name), inode.kind == S_IFREG else { return ENOTSUP }
        guard value.count <= Self.maxXattrValue else { return E2BIG }
        var use = KeyUse("xattr", caller: caller)
        let (file, rc) = acquire(inode, use: &use)
        let arc = audit("xattr", use, rc: rc, path: mountPath(ofDescriptor: inode.fd), caller: caller, detail: "set \(name)")
        guard let file else { return rc }
        if arc != 0 { openFiles.release(file, cache: cache); return arc }
        defer { openFiles.release(file, cache: cache) }
        // XATTR_CREATE (1) and XATTR_REPLACE (2) from <sys/xattr.h>.
        let mode: XattrSetMode = flags & 1 != 0 ? .create : flags & 2 != 0 ? .replace : .any
        guard let key = try? file.content.withReadLock({ () throws(FileOpError) in try file.key() }) else { return EACCES }
        let sealed: [UInt8]
        do {
            sealed = try XattrSeal.seal(value, name: name, fileID: file.file.fileID, key: key)
        } catch { return EIO }
        return xattrResult { try volume.metadata.setXattr(fileId: file.file.fileID.bytes, name: name, value: sealed, mode: mode) }
    }

    /// The value's length when `size` is 0, else the value (ERANGE if it does not fit).
    func getxattr(_ inode: Node, name: String, size: Int, caller: Caller? = nil) -> ([UInt8], Int, Int32) {
        guard Self.userNamespace(name), inode.kind == S_IFREG else { return ([], 0, ENODATA) }
        guard let fileID = fileID(inode) else { return ([], 0, EIO) }
        let sealed: [UInt8]?
        do { sealed = try volume.metadata.xattr(fileId: fileID.bytes, name: name) } catch { return ([], 0, EIO) }
        guard let sealed else { return ([], 0, ENODATA) }
        let length = sealed.count - AESGCM.nonceSize - AESGCM.tagSize
        guard length >= 0 else { return ([], 0, EIO) }
        if size == 0 { return ([], length, 0) }
        guard size >= length else { return ([], 0, ERANGE) }
        if length == 0 { return ([], 0, 0) }
        var use = KeyUse("xattr", caller: caller)
        let (file, rc) = acquire(inode, use: &use)
        let arc = audit("xattr", use, rc: rc, path: mountPath(ofDescriptor: inode.fd), caller: caller, detail: "get \(name)")
        guard let file else { return ([], 0, rc) }
        if arc != 0 { openFiles.release(file, cache: cache); return ([], 0, arc) }
        defer { openFiles.release(file, cache: cache) }
        guard let key = try? file.content.withReadLock({ () throws(FileOpError) in try file.key() }) else { return ([], 0, EACCES) }
        do {
            let plain = try XattrSeal.open(sealed, name: name, fileID: fileID, key: key)
            return (plain.withUnsafeBytes { Array($0) }, length, 0)
        } catch {
            Self.logger.error("getxattr file \(fileID) \(name): value failed authentication")
            return ([], 0, EIO)
        }
    }

    func listxattr(_ inode: Node, size: Int) -> ([UInt8], Int, Int32) {
        guard inode.kind == S_IFREG else { return ([], 0, 0) }
        guard let fileID = fileID(inode) else { return ([], 0, EIO) }
        let names: [String]
        do { names = try volume.metadata.xattrNames(fileId: fileID.bytes) } catch { return ([], 0, EIO) }
        var bytes = [UInt8]()
        for name in names { bytes += Array(name.utf8) + [0] }
        if size == 0 { return ([], bytes.count, 0) }
        guard size >= bytes.count else { return ([], 0, ERANGE) }
        return (bytes, bytes.count, 0)
    }

    func removexattr(_ inode: Node, name: String) -> Int32 {
        guard Self.userNamespace(name), inode.kind == S_IFREG else { return ENOTSUP }
        guard let fileID = fileID(inode) else { return EIO }
        return xattrResult { try volume.metadata.removeXattr(fileId: fileID.bytes, name: name) }
    }

    // MARK: helpers

    private func xattrResult(_ body: () throws -> Void) -> Int32 {
        do {
            try body()
            return 0
        } catch let error as MetadataError {
            switch error {
            case .exists: return EEXIST
            case .notFound: return ENODATA
            case .full: return ENOSPC
            default: return EIO
            }
        } catch { return EIO }
    }

    /// The file id from the header of a regular file, without unwrapping its key.
    private func fileID(_ inode: Node) -> FileID? {
        let fd = openAt(inode.procPath, relativeTo: AT_FDCWD, flags: O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        return try? ContentFile.readFileID(fd: fd)
    }
}
