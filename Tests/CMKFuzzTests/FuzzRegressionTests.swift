import Foundation
import XCTest
import CMKFuzzTargets

/// One test per parser bug found through the fuzz targets, each named after its input in
/// fuzz/corpus/<target>/regression-* (which the corpus tests replay too), each crashing before
/// its fix. (The audit one is in CMKAuditTests: it needs no harness.)
final class FuzzRegressionTests: XCTestCase {
    /// fuzz/corpus/kms-server/regression-wrap-volume-id-256-bytes and
    /// regression-unwrap-file-id-300-bytes: a wrap or unwrap request whose volume or file id is
    /// longer than 255 bytes crashed cmkfs-kms (`WrapContext.associatedData` writes each id's
    /// length in one byte, and `UInt8(256)` traps), so any peer allowed on the socket could stop
    /// the KMS for every volume it serves. Likewise regression-wrap-dek-65521-bytes: a DEK so long
    /// that its EDEK (28 bytes more) no longer fits the answer's u16-length field hit the
    /// precondition in `WireFrame.bytes` (reachable with a short key id such as `k`). Now each
    /// request is answered `bad_request`.
    func testKMSServerAnswersIDsLongerThan255BytesWithBadRequest() throws {
        for name in ["regression-wrap-volume-id-256-bytes", "regression-unwrap-file-id-300-bytes", "regression-wrap-dek-65521-bytes"] {
            let input = try XCTUnwrap(FuzzCorpusTests.corpus("kms-server").first { $0.0 == name }?.1, name)
            try fuzzKMSServer(input)
            let body = Array(input.dropFirst())
            let length = [UInt8(body.count >> 24 & 0xFF), UInt8(body.count >> 16 & 0xFF), UInt8(body.count >> 8 & 0xFF), UInt8(body.count & 0xFF)]
            let answer = try kmsServerExchange(length + body)
            XCTAssertGreaterThan(answer.count, 4, name)
            XCTAssertEqual(answer.count > 4 ? answer[4] : nil, 8, "\(name): status bad_request")
        }
    }

    /// fuzz/corpus/metadata-db/regression-blob-name-listed-as-xattr: a damaged meta.db whose row
    /// name `cmkfs.edek…` is stored as a BLOB, not TEXT. SQL's `NOT GLOB 'cmkfs.*'` lets a blob
    /// through, so `xattrNames` listed an internal row as a user xattr name (listxattr would
    /// have shown it). Now the reserved prefix is checked on the decoded name as well.
    func testXattrNamesNeverListAReservedRowStoredAsABlob() throws {
        let input = try XCTUnwrap(FuzzCorpusTests.corpus("metadata-db").first { $0.0 == "regression-blob-name-listed-as-xattr" }?.1)
        XCTAssertNoThrow(try fuzzMetadataDatabase(input))
    }
}
