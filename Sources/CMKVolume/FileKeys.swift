import Glibc
import CMKCrypto
import CMKFormat
import CMKKeys
import CMKMetadata

/// Why a file's data key could not be had, with the errno the mount returns.
public struct FileKeyError: Error, CustomStringConvertible {
    public let errno: Int32
    public let description: String
    /// The provider's answer when the provider failed (nil for a metadata failure).
    public let providerError: KeyProviderError?

    public init(errno: Int32, description: String, providerError: KeyProviderError? = nil) {
        self.errno = errno
        self.description = description
        self.providerError = providerError
    }
}

extension Volume {
    /// Makes a new random DEK for `fileID`, wraps it under the active master key and stores the
    /// EDEK row; returns the DEK and the version that wrapped it. The row is committed before the
    /// caller writes the file's header, so a crash can leave an orphan row but never a file
    /// without its key. When a rotation (another process) made another version active since
    /// this mount last looked, the insert refuses and the DEK is wrapped again under the new one.
    /// `request` says who asked (default: this process, for `purpose`).
    public func createFileKey(_ fileID: FileID, linkTag: [UInt8]? = nil,
                              request: KeyRequest? = nil) throws(FileKeyError) -> (SecretBytes, KeyRef) {
        let request = request ?? keyRequest()
        let dek: SecretBytes
        do { dek = try SecretBytes.random(count: 32) } catch { throw FileKeyError(errno: EIO, description: "\(error)") }
        var ref = activeKey
        for _ in 0..<3 {
            let edek: [UInt8]
            do {
                edek = try provider.wrap(dek, with: ref, context: WrapContext(volumeID: volumeID, fileID: fileID.bytes, request: request))
            } catch { throw Self.keyError(error) }
            do {
                let record = FileKeyRecord(edek: edek, keyId: ref.keyID, keyVersion: ref.version)
                if try metadata.insertFileKey(fileId: fileID.bytes, record, onlyIfActive: true, linkTag: linkTag) { return (dek, ref) }
                guard let reloaded = try reloadActiveKey(), reloaded != ref else { break }
                ref = reloaded
            } catch { throw Self.metadataError(error, fileID) }
        }
        throw FileKeyError(errno: EIO, description: "file \(fileID): the metadata database names no active master-key version")
    }

    /// Unwraps the DEK of `fileID` through the provider.
    public func fileKey(_ fileID: FileID) throws(FileKeyError) -> SecretBytes {
        try fileKeyAndVersion(fileID).0
    }

    /// Unwraps the DEK of `fileID`, with the master-key version that wrapped it. `request` says
    /// who asked (default: this process, for `purpose`).
    public func fileKeyAndVersion(_ fileID: FileID, request: KeyRequest? = nil) throws(FileKeyError) -> (SecretBytes, KeyRef) {
        let record: FileKeyRecord?
        do { record = try metadata.fileKey(fileId: fileID.bytes) } catch { throw Self.metadataError(error, fileID) }
        guard let record else {
            throw FileKeyError(errno: EIO, description: "file \(fileID) has no key row in the metadata database")
        }
        let ref = KeyRef(keyID: record.keyId, version: record.keyVersion)
        do {
            let context = WrapContext(volumeID: volumeID, fileID: fileID.bytes, request: request ?? keyRequest())
            return (try provider.unwrap(record.edek, with: ref, context: context), ref)
        } catch { throw Self.keyError(error) }
    }

    /// Removes the metadata rows of several files whose last links are gone, in one transaction.
    public func forgetFiles(_ fileIDs: [FileID]) throws(FileKeyError) {
        guard !fileIDs.isEmpty else { return }
        do { try metadata.deleteFiles(fileIds: fileIDs.map(\.bytes)) } catch {
            throw FileKeyError(errno: error == .full ? ENOSPC : EIO,
                               description: "deleting the key rows of \(fileIDs.count) unlinked files: \(error)")
        }
    }

    /// Removes every metadata row of a file whose last link is gone.
    public func forgetFile(_ fileID: FileID) throws(FileKeyError) {
        do { try metadata.deleteFile(fileId: fileID.bytes) } catch { throw Self.metadataError(error, fileID) }
    }

    static func keyError(_ error: KeyProviderError) -> FileKeyError {
        switch error {
        case .keyDisabled, .keyDestroyed: return FileKeyError(errno: EACCES, description: "\(error)", providerError: error)
        default: return FileKeyError(errno: EIO, description: "\(error)", providerError: error)
        }
    }

    static func metadataError(_ error: MetadataError, _ fileID: FileID) -> FileKeyError {
        switch error {
        case .full: return FileKeyError(errno: ENOSPC, description: "file \(fileID): \(error)")
        default: return FileKeyError(errno: EIO, description: "file \(fileID): \(error)")
        }
    }
}
