import Glibc
import CMKControl
import CMKFormat
import CMKSystem
import CMKVolume

/// `cmkfs info PATH`: what the mount knows of one file, from the control socket.
extension FileSystem {
    /// Describes the regular file at `relativePath` (as the mount shows it): its file id, the
    /// master-key version wrapping its key, whether that key is cached now, and its ciphertext's
    /// size. Reads no content and unwraps no key, so it neither warms the cache nor asks the provider.
    public func info(relativePath: String) -> ControlResponse {
        let path = relativePath.drop { $0 == "/" }
        guard !path.split(separator: "/").contains("..") else {
            return ControlResponse(ok: false, error: "not a path inside the volume: \(relativePath)")
        }
        var backingPath = path.isEmpty ? "." : String(path)
        if let names, !path.isEmpty {
            do { backingPath = try names.backingPath(ofMount: backingPath, rootFD: rootFD) } catch {
                return ControlResponse(ok: false, error: "/\(path): \(Errno(rawValue: error.errno))")
            }
        }
        let fd: FileDescriptor
        do { fd = try Descriptor(rawValue: rootFD).openat(backingPath, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC) } catch {
            let e = error.errno
            return ControlResponse(ok: false, error: "/\(path): " + (e == .ELOOP ? "a symbolic link (info describes files)" : e.description))
        }
        guard let st = try? fd.descriptor.fstat(), st.st_mode & S_IFMT == S_IFREG else {
            return ControlResponse(ok: false, error: "/\(path): not a regular file (info describes files)")
        }
        let fileID: FileID
        do { fileID = try ContentFile.readFileID(fd: fd.rawValue) } catch {
            return ControlResponse(ok: false, error: "/\(path): cannot read the file's header: \(error)")
        }
        let row: (keyID: String, version: Int)?
        do { row = try volume.metadata.fileKey(fileID: fileID.bytes).map { ($0.keyId, $0.keyVersion) } } catch {
            return ControlResponse(ok: false, error: "/\(path): cannot read the file's key row: \(error)")
        }
        var info = ControlFileInfo(fileID: fileID.description, backingBytes: Int(st.st_size), diskBytes: Int(st.st_blocks) * 512,
                                   keyCached: cache.isCached(fileID.bytes))
        if let row { (info.keyID, info.keyVersion) = (row.keyID, row.version) }
        var response = ControlResponse(ok: true)
        response.info = info
        return response
    }
}
