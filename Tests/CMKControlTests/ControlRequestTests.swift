import Foundation
import XCTest
@testable import CMKControl

/// The control requests' wire format (docs/control-protocol.md) is fixed: the lines clients sent
/// before requests were an enum still decode to the request they meant, and every request
/// encodes to the members the mount has always read.
final class ControlRequestTests: XCTestCase {
    func decode(_ line: String) throws -> ControlRequest {
        try JSONDecoder().decode(ControlRequest.self, from: Data(line.utf8))
    }

    /// The JSON object a request encodes to, as a dictionary (member order is not part of the format).
    func object(_ request: ControlRequest) throws -> NSDictionary {
        try XCTUnwrap(JSONSerialization.jsonObject(with: try JSONEncoder().encode(request)) as? NSDictionary)
    }

    /// Bytes as the CLI (encoding the old `ControlRequest` struct with `JSONEncoder`) and the
    /// test fixture's python client sent them.
    func testTodaysRequestBytesDecode() throws {
        let lines: [(String, ControlRequest)] = [
            (#"{"op":"stats"}"#, .stats),
            (#"{"op":"flush","reason":"cmkfs cache flush"}"#, .flush(reason: "cmkfs cache flush")),
            (#"{"reason":"cmkfs key revoke: drill","op":"flush-key","key_id":"mk-0123456789abcdef"}"#,
             .flushKey(keyID: "mk-0123456789abcdef", version: nil, reason: "cmkfs key revoke: drill")),
            (#"{"op":"flush-key","key_id":"mk-1","version":2,"reason":"cmkfs key purge --version 2"}"#,
             .flushKey(keyID: "mk-1", version: 2, reason: "cmkfs key purge --version 2")),
            (#"{"op":"relabel"}"#, .relabel),
            (#"{"op":"rekey","path":"\/dir\/a file"}"#, .rekey(path: "/dir/a file")),
            (#"{"op":"info","path":"\/dir\/a file"}"#, .info(path: "/dir/a file")),
            (#"{"op":"metrics"}"#, .metrics),
            (#"{"op":"audit","key_id":"mk-1","reason":"disabled mk-1 v1","event":"revoke"}"#,
             .audit(ControlAuditRecord(event: "revoke", keyID: "mk-1", detail: "disabled mk-1 v1"), durable: true)),
            (#"{"op":"audit","event":"test-sync","reason":"test: sync the audit log","durable":true}"#,
             .audit(ControlAuditRecord(event: "test-sync", detail: "test: sync the audit log"), durable: true)),
            (#"{"op":"audit","event":"rotate","result":"error","error":"interrupted","key_id":"mk-1","version":3,"file_id":"ed1843116f1fd87bca3bd532b53a4d71","path":"\/a","reason":"started","durable":false}"#,
             .audit(ControlAuditRecord(event: "rotate", result: "error", error: "interrupted", fileID: "ed1843116f1fd87bca3bd532b53a4d71",
                                       path: "/a", keyID: "mk-1", keyVersion: 3, detail: "started"), durable: false)),
            // Members an op does not use are ignored, as they always were.
            (#"{"op":"stats","key_id":"mk-1","durable":false}"#, .stats),
            (#"{"op":"flush","key_id":"mk-1","version":1}"#, .flush(reason: nil)),
        ]
        for (line, expected) in lines {
            XCTAssertEqual(try decode(line), expected, line)
        }
    }

    func testEveryRequestEncodesToTheMembersTheMountReads() throws {
        let cases: [(ControlRequest, NSDictionary)] = [
            (.stats, ["op": "stats"]),
            (.flush(reason: "cmkfs cache flush"), ["op": "flush", "reason": "cmkfs cache flush"]),
            (.flush(reason: nil), ["op": "flush"]),
            (.flushKey(keyID: "mk-1", version: nil, reason: "r"), ["op": "flush-key", "key_id": "mk-1", "reason": "r"]),
            (.flushKey(keyID: "mk-1", version: 2, reason: nil), ["op": "flush-key", "key_id": "mk-1", "version": 2]),
            (.relabel, ["op": "relabel"]),
            (.rekey(path: "/d/f"), ["op": "rekey", "path": "/d/f"]),
            (.info(path: "/d/f"), ["op": "info", "path": "/d/f"]),
            (.metrics, ["op": "metrics"]),
            (.audit(ControlAuditRecord(event: "enable", keyID: "mk-1", detail: "enabled mk-1 v1"), durable: true),
             ["op": "audit", "event": "enable", "result": "ok", "key_id": "mk-1", "reason": "enabled mk-1 v1", "durable": true]),
            (.audit(ControlAuditRecord(event: "rekey", result: "error", error: "EIO", fileID: "00", path: "/f", keyID: "k", keyVersion: 4),
                    durable: false),
             ["op": "audit", "event": "rekey", "result": "error", "error": "EIO", "file_id": "00", "path": "/f", "key_id": "k",
              "version": 4, "durable": false]),
        ]
        for (request, expected) in cases {
            XCTAssertEqual(try object(request), expected, "\(request)")
            XCTAssertEqual(try JSONDecoder().decode(ControlRequest.self, from: try JSONEncoder().encode(request)), request)
        }
    }

    /// What the mount answers to a line that is JSON but not a request it serves.
    func testRequestsMissingWhatTheirOpNeedsAreRefusedByName() {
        let refused: [(String, String)] = [
            (#"{"op":"flush-key"}"#, "flush-key needs key_id"),
            (#"{"op":"rekey"}"#, "rekey needs path"),
            (#"{"op":"info"}"#, "info needs path"),
            (#"{"op":"audit","durable":true}"#, "audit needs event"),
            (#"{"op":"mount"}"#, "unknown op 'mount'"),
        ]
        for (line, message) in refused {
            XCTAssertThrowsError(try decode(line), line) { error in
                XCTAssertEqual((error as? ControlRequestError)?.message, message, line)
            }
        }
        for line in [#"{"key_id":"mk-1"}"#, #"{"op":"flush-key","key_id":7}"#, "stats", ""] {
            XCTAssertThrowsError(try decode(line), line) { error in XCTAssertNil(error as? ControlRequestError, line) }
        }
    }
}
