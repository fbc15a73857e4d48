import XCTest
import Glibc
import CMKAudit
import CMKCrypto
import CMKFormat
import CMKKeyService
import CMKKeys
import CMKMetadata
import CMKSystem
import CMKVolume
@testable import CMKFuse

/// Pins every row of the errno table (`Sources/CMKFuse/Errno+Mapping.swift`): a change to what
/// applications see for some failure must show up here as a changed expectation.
final class ErrnoMappingTests: XCTestCase {
    private let key = KeyRef(keyID: "k", version: 1)

    /// One example of every case of every domain error, with the errno the mount answers.
    private var rows: [(FSError, Int32)] {
        let provider: [(KeyProviderError, Int32)] = [
            (.keyNotFound(key, detail: "gone"), EACCES), (.keyDisabled(key), EACCES), (.keyDestroyed(key), EACCES),
            (.accessDenied(key, detail: "permission denied"), EACCES),
            (.unwrapFailed(key), EIO), (.unavailable("down"), EIO), (.corrupt("bad"), EIO),
        ]
        let metadata: [(MetadataError, Int32)] = [
            (.notFound, EIO), (.exists, EIO), (.corrupt("bad"), EIO), (.newerSchema(found: 9, supported: 1), EIO),
            (.io(code: 10, message: "disk"), EIO), (.full, ENOSPC), (.busy, EIO),
        ]
        let content: [(ContentError, Int32)] = [
            (.io(call: "pread", errno: EROFS), EROFS), (.io(call: "pwrite", errno: ENOSPC), ENOSPC),
            (.corruptHeader("x"), EIO), (.corruptBlock(index: 3, reason: "tag"), EIO), (.crypto(.randomFailed), EIO),
        ]
        let names: [(NameError, Int32)] = [
            (.tooLong, ENAMETOOLONG), (.malformed("x"), EINVAL), (.authenticationFailed, EIO), (.crypto(.authenticationFailed), EIO),
        ]
        let causes: [(FileKeyError.Cause, Int32)] = provider.map { (.provider($0.0), $0.1) }
            + metadata.map { (.metadata($0.0), $0.1) }
            + content.map { (.content($0.0), $0.1) }
            + [(.crypto(.randomFailed), EIO), (.system(errno: EXDEV), EXDEV), (.missingRow, EIO), (.corrupt, EIO),
               (.keyDropped, EACCES), (.unexpected(CryptoError.randomFailed), EIO)]
        let audit: [(AuditError.Kind, Int32)] = [(.full, ENOSPC), (.io, EIO), (.busy, EIO), (.key, EIO), (.malformed, EIO)]
        let xattr: [(MetadataError, Int32)] = [
            (.notFound, ENODATA), (.exists, EEXIST), (.corrupt("bad"), EIO), (.newerSchema(found: 9, supported: 1), EIO),
            (.io(code: 10, message: "disk"), EIO), (.full, ENOSPC), (.busy, EIO),
        ]
        return [(.posix(EISDIR), EISDIR), (.posix(ESTALE), ESTALE),
                (.system(SystemError("openat", errno: .ENOENT, path: "x")), ENOENT),
                (.system(SystemError("renameat2", errno: Errno(rawValue: EXDEV), path: "y")), EXDEV), (.refused(.revoked), EACCES), (.refused(.expired), EIO),
                (.crypto(.randomFailed), EIO), (.corrupt("unbound"), EIO)]
            + content.map { (.content($0.0), $0.1) }
            + names.map { (.name($0.0), $0.1) }
            + causes.map { (.fileKey(FileKeyError($0.0, "why")), $0.1) }
            + audit.map { (.audit(AuditError($0.0, "why")), $0.1) }
            + metadata.map { (.metadata($0.0), EIO) }
            + xattr.map { (.xattr($0.0), $0.1) }
    }

    func testEveryCaseMapsToItsErrno() {
        for (error, expected) in rows {
            XCTAssertEqual(error.errno, expected, "\(error) should answer \(String(cString: strerror(expected)))")
        }
    }

    /// The rows above cover every case: these switches stop compiling when a lower layer adds
    /// one, so the new case gets a row (and a decided errno) before anything builds.
    func testRowsCoverEveryCase() {
        func covered(_ e: ContentError) { switch e { case .io, .corruptHeader, .corruptBlock, .crypto: break } }
        func covered(_ e: NameError) { switch e { case .tooLong, .malformed, .authenticationFailed, .crypto: break } }
        func covered(_ e: KeyProviderError) {
            switch e { case .keyNotFound, .keyDisabled, .keyDestroyed, .accessDenied, .unwrapFailed, .unavailable, .corrupt: break }
        }
        func covered(_ e: MetadataError) { switch e { case .notFound, .exists, .corrupt, .newerSchema, .io, .full, .busy: break } }
        func covered(_ c: FileKeyError.Cause) {
            switch c {
            case .provider, .metadata, .content, .crypto, .system, .missingRow, .corrupt, .keyDropped, .unexpected: break
            }
        }
        func covered(_ k: AuditError.Kind) { switch k { case .full, .io, .busy, .key, .malformed: break } }
        func covered(_ r: KeyRefusal) { switch r { case .revoked, .expired: break } }
        func covered(_ e: FSError) {
            switch e { case .posix, .system, .content, .name, .fileKey, .refused, .audit, .metadata, .xattr, .crypto, .corrupt: break }
        }
        XCTAssertEqual(rows.count, 8 + 5 + 4 + (7 + 7 + 5 + 6) + 5 + 7 + 7)
    }

    /// The cause survives to the edge: the provider's own answer is still there to log.
    func testFileKeyErrorKeepsTheProvidersAnswer() {
        let error = FSError.fileKey(FileKeyError(.provider(.keyDisabled(key)), "master key k v1 is disabled"))
        guard case .fileKey(let keyError) = error, case .provider(.keyDisabled(let ref)) = keyError.cause else {
            return XCTFail("the provider's error was lost: \(error)")
        }
        XCTAssertEqual(ref, key)
        XCTAssertEqual(keyError.providerError, .keyDisabled(key))
    }
}
