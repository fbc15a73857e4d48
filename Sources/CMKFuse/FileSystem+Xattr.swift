import Logging
import Glibc
import CMKCrypto
import CMKFormat
import CMKMetadata
import CMKSystem

/// User extended attributes of regular files. Values are sealed with the file's DEK (AES-256-GCM,
/// AAD binding file id and name) and kept in the metadata database, never in the backing tree.
/// Other namespaces (security, system, trusted: no POSIX ACLs, no security labels) answer ENOTSUP
/// to every call; a user.* name of a non-regular file cannot be set (ENOTSUP) and is never there
/// (ENODATA).
extension FileSystem {
    static let maxXattrValue = 64 * 1024

    private static func userNamespace(_ name: String) -> Bool { name.hasPrefix("user.") && name.count > 5 }

    func setxattr(_ inode: Node, name: String, value: UnsafeRawBufferPointer, flags: Int32, caller: Caller? = nil) throws(FSError) {
        evictions.drain()
        guard Self.userNamespace(name), inode.kind == S_IFREG else { throw .posix(ENOTSUP) }
        guard value.count <= Self.maxXattrValue else { throw .posix(E2BIG) }
        let file = try acquireAudited(inode, caller: caller, detail: "set \(name)")
        defer { openFiles.release(file) }
        // XATTR_CREATE (1) and XATTR_REPLACE (2) from <sys/xattr.h>.
        let mode: XattrSetMode = flags & 1 != 0 ? .create : flags & 2 != 0 ? .replace : .any
        let key = try Self.keyOrRefusal(file)
        let sealed: [UInt8]
        do {
            sealed = try XattrSeal.seal(value, name: name, fileID: file.file.fileID, key: key)
        } catch { throw .crypto(error) }
        do { try volume.metadata.setXattr(fileID: file.file.fileID.bytes, name: name, value: sealed, mode: mode) } catch {
            throw .xattr(error)
        }
    }

    /// The value (empty) and its length when `size` is 0, else the value (ERANGE if it does not fit).
    func getxattr(_ inode: Node, name: String, size: Int, caller: Caller? = nil) throws(FSError) -> (bytes: [UInt8], length: Int) {
        guard Self.userNamespace(name) else { throw .posix(ENOTSUP) }
        guard inode.kind == S_IFREG else { throw .posix(ENODATA) }
        let fileID = try fileID(inode)
        let sealed: [UInt8]?
        do { sealed = try volume.metadata.xattr(fileID: fileID.bytes, name: name) } catch { throw .metadata(error) }
        guard let sealed else { throw .posix(ENODATA) }
        let length = sealed.count - AESGCM.nonceSize - AESGCM.tagSize
        guard length >= 0 else { throw .corrupt("file \(fileID): the value of \(name) is too short to be sealed") }
        if size == 0 { return ([], length) }
        guard size >= length else { throw .posix(ERANGE) }
        if length == 0 { return ([], 0) }
        let file = try acquireAudited(inode, caller: caller, detail: "get \(name)")
        defer { openFiles.release(file) }
        let key = try Self.keyOrRefusal(file)
        do {
            let plain = try XattrSeal.open(sealed, name: name, fileID: fileID, key: key)
            return (plain.withUnsafeBytes { Array($0) }, length)
        } catch {
            Self.logger.error("getxattr file \(fileID) \(name): value failed authentication")
            throw .corrupt("file \(fileID): the value of \(name) failed authentication")
        }
    }

    func listxattr(_ inode: Node, size: Int) throws(FSError) -> (bytes: [UInt8], length: Int) {
        guard inode.kind == S_IFREG else { return ([], 0) }
        let fileID = try fileID(inode)
        let names: [String]
        do { names = try volume.metadata.xattrNames(fileID: fileID.bytes) } catch { throw .metadata(error) }
        var bytes = [UInt8]()
        for name in names { bytes += Array(name.utf8) + [0] }
        if size == 0 { return ([], bytes.count) }
        guard size >= bytes.count else { throw .posix(ERANGE) }
        return (bytes, bytes.count)
    }

    func removexattr(_ inode: Node, name: String) throws(FSError) {
        guard Self.userNamespace(name), inode.kind == S_IFREG else { throw .posix(ENOTSUP) }
        let fileID = try fileID(inode)
        do { try volume.metadata.removeXattr(fileID: fileID.bytes, name: name) } catch { throw .xattr(error) }
    }

    // MARK: helpers

    /// Opens `inode` for a value's seal and records the key use (an `xattr` audit event).
    private func acquireAudited(_ inode: Node, caller: Caller?, detail: String) throws(FSError) -> OpenFile {
        var use = KeyUse("xattr", caller: caller)
        let file: OpenFile
        do { file = try acquire(inode, use: &use) } catch {
            audit("xattr", use, failure: error, path: mountPath(inode), caller: caller, detail: detail)
            throw error
        }
        do { try audit("xattr", use, path: mountPath(inode), caller: caller, detail: detail) } catch {
            openFiles.release(file)
            throw error
        }
        return file
    }

    /// The file's DEK; any refusal of its lease is answered EACCES here, as a revocation.
    private static func keyOrRefusal(_ file: OpenFile) throws(FSError) -> SecretBytes {
        guard let key = try? file.content.withReadLock({ () throws(FSError) in try file.key() }) else { throw .refused(.revoked) }
        return key
    }

    /// The file id from the header of a regular file, without unwrapping its key.
    private func fileID(_ inode: Node) throws(FSError) -> FileID {
        // Whatever kept the header from being read, the value cannot be found: EIO, as before.
        guard let fd = try? Descriptor.cwd.openat(inode.procPath, O_RDONLY | O_CLOEXEC) else { throw .posix(EIO) }
        do { return try ContentFile.readFileID(fd: fd.rawValue) } catch { throw .corrupt("inode \(inode.identity.inode): \(error)") }
    }
}
