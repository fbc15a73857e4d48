import Logging
import Glibc
import CMKAudit
import CMKCrypto
import CMKFormat
import CMKKeys
import CMKVolume

/// Rekey inside the live mount: the new DEK is wrapped first, with no lock held; then the file is
/// re-encrypted while its content lock is held exclusively, so applications that have it open
/// just wait for the switch and then go on with the new key (their handles share the one
/// `OpenFile` of the inode). A flush or revocation during the re-encryption stops it.
extension FileSystem {
    /// Rekeys the regular file at `relativePath` (under the backing root, as the mount shows
    /// it); returns 0 or an errno with a message. `requester` is the control-socket peer.
    public func rekey(relativePath: String, requester: (uid: uid_t, gid: gid_t, pid: pid_t)) -> (Int32, String?) {
        let path = relativePath.drop { $0 == "/" }
        guard !path.isEmpty, !path.split(separator: "/").contains("..") else { return (EINVAL, "not a path inside the volume: \(relativePath)") }
        // The control request names the file as the mount shows it; the backing path may differ.
        var backingPath = String(path)
        if let names {
            let (mapped, rc) = names.backingPath(ofMount: backingPath, rootFD: rootFD)
            guard rc == 0 else { return (rc, "/\(path): \(String(cString: strerror(rc)))") }
            backingPath = mapped
        }
        let fd = openAt(backingPath, relativeTo: rootFD, flags: O_RDWR | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else { let e = errno; return (e, "/\(path): \(String(cString: strerror(e)))") }
        let caller = Caller(uid: requester.uid, gid: requester.gid, pid: requester.pid)
        var use = KeyUse("rekey", caller: caller)
        let (shared, rc) = acquire(fd: fd, label: "/\(path)", use: &use)
        guard let file = shared else {
            _ = audit("rekey", use, rc: rc, path: "/\(path)", caller: caller)
            return (rc, "/\(path): \(use.error ?? String(cString: strerror(rc)))")
        }
        defer { openFiles.release(file, cache: cache) }
        let oldRef = use.key
        // The provider call (wrapping the new DEK) comes first, with no lock held: the lock rule
        // of `OpenFile`. Readers and writers of the file wait only for the re-encryption.
        let prepared: PreparedRekey
        do throws(FileKeyError) { prepared = try volume.prepareRekey(fileID: file.file.fileID) } catch {
            Self.logger.error("rekey /\(path): \(error)")
            _ = audit("rekey", use, rc: error.errno, error: error.description, path: "/\(path)", caller: caller)
            return (error.errno, "/\(path): \(error.description)")
        }
        let outcome: Result<KeyRef, FileKeyError> = file.content.withWriteLock { () -> Result<KeyRef, FileKeyError> in
            let oldKey: SecretBytes
            do throws(FileOpError) { oldKey = try file.key() } catch {
                return .failure(FileKeyError(errno: error.errno, description: error.description))
            }
            let oldLease = file.lease
            do throws(FileKeyError) {
                // The kill switch does not wait for a long re-encryption: a dropped key stops it.
                let (newKey, ref) = try volume.rekey(fd: file.fd, relativePath: backingPath, fileID: file.file.fileID, oldKey: oldKey,
                                                     prepared: prepared, proceed: { oldLease.isLive })
                let old = file.lease
                file.lease = cache.replace(fileID: file.file.fileID.bytes, key: newKey, keyRef: ref)
                cache.unpin(old)
                return .success(ref)
            } catch { return .failure(error) }
        }
        switch outcome {
        case .success(let ref):
            use.key = ref
            use.cache = "new"
            let arc = audit("rekey", use, rc: 0, path: "/\(path)", caller: caller,
                            detail: "re-encrypted under a new data key" + (oldRef.map { " (was under \($0))" } ?? ""))
            return (arc, arc == 0 ? nil : "/\(path): rekeyed, but its audit record could not be written")
        case .failure(let error):
            Self.logger.error("rekey /\(path): \(error)")
            _ = audit("rekey", use, rc: error.errno, error: error.description, path: "/\(path)", caller: caller)
            return (error.errno, "/\(path): \(error.description)")
        }
    }
}
