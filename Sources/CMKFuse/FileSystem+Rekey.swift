import Logging
import Glibc
import CMKAudit
import CMKCrypto
import CMKFormat
import CMKKeys
import CMKSystem
import CMKVolume

/// Rekey inside the live mount: the new DEK is wrapped first, with no lock held; then the file is
/// re-encrypted while its content lock is held exclusively, so applications that have it open
/// just wait for the switch and then go on with the new key (their handles share the one
/// `OpenFile` of the inode). A flush or revocation during the re-encryption stops it.
/// A live rekey that failed: the operator's message, and the mount's error, which decides the
/// errno the control response carries (`FSError.errno`, as for a FUSE reply).
public struct RekeyFailure: Error, CustomStringConvertible {
    let cause: FSError
    /// "/PATH: why", for the control response.
    public let description: String
    /// The errno the control response carries.
    public var errno: Int32 { cause.errno }

    init(_ cause: FSError, _ description: String) {
        self.cause = cause
        self.description = description
    }
}

extension FileSystem {
    /// Rekeys the regular file at `relativePath` (under the backing root, as the mount shows
    /// it) and returns the master-key version wrapping its new key. `requester` is the
    /// control-socket peer.
    @discardableResult
    public func rekey(relativePath: String, requester: (uid: uid_t, gid: gid_t, pid: pid_t)) throws(RekeyFailure) -> KeyRef {
        let path = relativePath.drop { $0 == "/" }
        guard !path.isEmpty, !path.split(separator: "/").contains("..") else {
            throw RekeyFailure(.posix(EINVAL), "not a path inside the volume: \(relativePath)")
        }
        // The control request names the file as the mount shows it; the backing path may differ.
        var backingPath = String(path)
        if let names {
            do { backingPath = try names.backingPath(ofMount: backingPath, rootFD: rootFD) } catch {
                throw RekeyFailure(error, "/\(path): \(Errno(rawValue: error.errno))")
            }
        }
        let fd: FileDescriptor
        do { fd = try Descriptor(rawValue: rootFD).openat(backingPath, O_RDWR | O_NOFOLLOW | O_CLOEXEC) } catch {
            throw RekeyFailure(.system(error), "/\(path): \(error.errno)")
        }
        let caller = Caller(uid: requester.uid, gid: requester.gid, pid: requester.pid)
        var use = KeyUse("rekey", caller: caller)
        let file: OpenFile
        do { file = try openFiles.open(fd: fd, label: "/\(path)", use: &use) } catch {
            audit("rekey", use, failure: error, path: "/\(path)", caller: caller)
            throw RekeyFailure(error, "/\(path): \(use.error ?? Errno(rawValue: error.errno).description)")
        }
        defer { openFiles.release(file) }
        let oldRef = use.key
        // The provider call (wrapping the new DEK) comes first, with no lock held: the lock rule
        // of `OpenFile`. Readers and writers of the file wait only for the re-encryption.
        let prepared: PreparedRekey
        do throws(FileKeyError) { prepared = try volume.prepareRekey(fileID: file.file.fileID) } catch {
            // By file id: a log never names a file (docs/operator-guide.md, "What is never logged").
            Self.logger.error("rekey of file \(file.file.fileID): \(error)")
            let failure = FSError.fileKey(error)
            audit("rekey", use, failure: failure, error: error.description, path: "/\(path)", caller: caller)
            throw RekeyFailure(failure, "/\(path): \(error.description)")
        }
        let outcome: Result<KeyRef, FSError> = file.content.withWriteLock { () -> Result<KeyRef, FSError> in
            let oldKey: SecretBytes
            do throws(FSError) { oldKey = try file.key() } catch {
                return .failure(error)
            }
            let oldLease = file.lease
            do throws(FileKeyError) {
                // The kill switch does not wait for a long re-encryption: a dropped key stops it.
                let (newKey, ref) = try volume.rekey(fd: file.fd, relativePath: backingPath, fileID: file.file.fileID, oldKey: oldKey,
                                                     prepared: prepared, proceed: { oldLease.isLive })
                openFiles.installRekeyed(file, key: newKey, ref: ref)
                return .success(ref)
            } catch { return .failure(.fileKey(error)) }
        }
        switch outcome {
        case .success(let ref):
            use.key = ref
            use.cache = "new"
            do {
                try audit("rekey", use, path: "/\(path)", caller: caller,
                          detail: "re-encrypted under a new data key" + (oldRef.map { " (was under \($0))" } ?? ""))
            } catch { throw RekeyFailure(error, "/\(path): rekeyed, but its audit record could not be written") }
            return ref
        case .failure(let error):
            Self.logger.error("rekey of file \(file.file.fileID): \(error)")
            audit("rekey", use, failure: error, error: error.description, path: "/\(path)", caller: caller)
            throw RekeyFailure(error, "/\(path): \(error.description)")
        }
    }
}
