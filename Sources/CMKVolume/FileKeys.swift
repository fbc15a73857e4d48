import CMKCrypto
import CMKFormat
import CMKKeys
import CMKMetadata

/// Why a file's data key could not be had, made or changed: the cause as the lower layer gave
/// it (the provider's, the database's or the content format's own error) and a sentence for logs
/// and audit records. Which errno the mount answers is decided at the FUSE edge
/// (`Sources/CMKFuse/Errno+Mapping.swift`), from `cause`.
public struct FileKeyError: Error, CustomStringConvertible {
    /// What went wrong underneath.
    public enum Cause: Sendable {
        /// The key provider refused or failed; its answer as it gave it.
        case provider(KeyProviderError)
        /// The metadata database failed.
        case metadata(MetadataError)
        /// Reading or writing the file's content failed (a rekey's re-encryption).
        case content(ContentError)
        /// A crypto operation other than the provider's failed (randomness, an xattr's seal).
        case crypto(CryptoError)
        /// A system call failed with this errno (a rekey's copy, sync or temp file).
        case system(errno: Int32)
        /// The metadata database lacks a row it must have: the file's key, the name key, or an
        /// active master-key version.
        case missingRow
        /// The backing file is not a valid encrypted file (a size no write produces).
        case corrupt
        /// The key was dropped (revoked or flushed) while a rekey was using it.
        case keyDropped
        /// A failure none of the cases above names (encoding the rekey journal), kept whole.
        case unexpected(any Error)
    }

    public let cause: Cause
    public let description: String

    public init(_ cause: Cause, _ description: String) {
        self.cause = cause
        self.description = description
    }

    /// The provider's answer when the provider failed (nil for any other cause).
    public var providerError: KeyProviderError? {
        if case .provider(let error) = cause { return error }
        return nil
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
        do { dek = try SecretBytes.random(count: 32) } catch { throw FileKeyError(.crypto(error), "\(error)") }
        var ref = activeKey
        for _ in 0..<3 {
            let edek: [UInt8]
            do {
                edek = try provider.wrap(dek, with: ref, context: WrapContext(volumeID: volumeID, fileID: fileID.bytes, request: request))
            } catch { throw Self.keyError(error) }
            do {
                let record = FileKeyRecord(edek: edek, keyId: ref.keyID, keyVersion: ref.version)
                if try metadata.insertFileKey(fileID: fileID.bytes, record, onlyIfActive: true, linkTag: linkTag) { return (dek, ref) }
                guard let reloaded = try reloadActiveKey(), reloaded != ref else { break }
                ref = reloaded
            } catch { throw Self.metadataError(error, fileID) }
        }
        throw FileKeyError(.missingRow, "file \(fileID): the metadata database names no active master-key version")
    }

    /// Unwraps the DEK of `fileID` through the provider.
    public func fileKey(_ fileID: FileID) throws(FileKeyError) -> SecretBytes {
        try fileKeyAndVersion(fileID).0
    }

    /// Unwraps the DEK of `fileID`, with the master-key version that wrapped it. `request` says
    /// who asked (default: this process, for `purpose`).
    public func fileKeyAndVersion(_ fileID: FileID, request: KeyRequest? = nil) throws(FileKeyError) -> (SecretBytes, KeyRef) {
        let record: FileKeyRecord?
        do { record = try metadata.fileKey(fileID: fileID.bytes) } catch { throw Self.metadataError(error, fileID) }
        guard let record else {
            throw FileKeyError(.missingRow, "file \(fileID) has no key row in the metadata database")
        }
        return try unwrap(record, fileID, request: request)
    }

    /// `fileKeyAndVersion`, and whether the file has the name binding `tag`, read with the key
    /// in one metadata statement. The key is unwrapped whatever the answer: the caller refuses
    /// an unbound file after, as it does when it reads the binding on its own.
    public func fileKeyAndVersion(_ fileID: FileID, request: KeyRequest?, boundBy tag: [UInt8]) throws(FileKeyError) -> (key: SecretBytes, ref: KeyRef, bound: Bool) {
        let found: (record: FileKeyRecord, bound: Bool)?
        do { found = try metadata.fileKey(fileID: fileID.bytes, boundBy: tag) } catch { throw Self.metadataError(error, fileID) }
        guard let found else {
            throw FileKeyError(.missingRow, "file \(fileID) has no key row in the metadata database")
        }
        let (key, ref) = try unwrap(found.record, fileID, request: request)
        return (key, ref, found.bound)
    }

    private func unwrap(_ record: FileKeyRecord, _ fileID: FileID, request: KeyRequest?) throws(FileKeyError) -> (SecretBytes, KeyRef) {
        let ref = KeyRef(keyID: record.keyId, version: record.keyVersion)
        do {
            let context = WrapContext(volumeID: volumeID, fileID: fileID.bytes, request: request ?? keyRequest())
            return (try provider.unwrap(record.edek, with: ref, context: context), ref)
        } catch { throw Self.keyError(error) }
    }

    /// Removes the metadata rows of several files whose last links are gone, in one transaction.
    public func forgetFiles(_ fileIDs: [FileID]) throws(FileKeyError) {
        guard !fileIDs.isEmpty else { return }
        do { try metadata.deleteFiles(fileIDs: fileIDs.map(\.bytes)) } catch {
            throw FileKeyError(.metadata(error), "deleting the key rows of \(fileIDs.count) unlinked files: \(error)")
        }
    }

    /// Removes every metadata row of a file whose last link is gone.
    public func forgetFile(_ fileID: FileID) throws(FileKeyError) {
        do { try metadata.deleteFile(fileID: fileID.bytes) } catch { throw Self.metadataError(error, fileID) }
    }

    static func keyError(_ error: KeyProviderError) -> FileKeyError {
        FileKeyError(.provider(error), "\(error)")
    }

    static func metadataError(_ error: MetadataError, _ fileID: FileID) -> FileKeyError {
        FileKeyError(.metadata(error), "file \(fileID): \(error)")
    }
}
