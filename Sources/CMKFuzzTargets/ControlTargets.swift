import Foundation
import CMKControl

// The mount's control socket: the JSON line a client sends and the JSON line the mount answers.

/// A request line through the decoder the mount uses (`JSONDecoder` into `ControlRequest`); one
/// it accepts must survive encode/decode unchanged, and its fields, written into an audit
/// record as the mount's `audit` op does, must read back from that record. The same bytes as
/// an answer through the decoder `cmkfs cache`/`key revoke` use (`ControlResponse`).
public func fuzzControl(_ data: [UInt8]) throws(FuzzViolation) {
    let json = Data(data)
    if let request = try? JSONDecoder().decode(ControlRequest.self, from: json) {
        let again: ControlRequest
        do { again = try JSONDecoder().decode(ControlRequest.self, from: try JSONEncoder().encode(request)) } catch {
            throw FuzzViolation("control", "an accepted request does not re-encode: \(error)")
        }
        guard again == request else {
            throw FuzzViolation("control", "request changed on encode/decode: \(request) -> \(again)")
        }
        // The strings of an `audit` request become a record's fields (ControlServer.handle).
        if case .audit(let r, _) = request {
            let strings = [r.event, r.result, r.error, r.fileID, r.path, r.keyID, "cmkfs", r.detail]
            try checkWriter((seq: 1, strings: strings.map { $0 ?? "" }), target: "control")
        }
    }
    if let response = try? JSONDecoder().decode(ControlResponse.self, from: json) {
        let again: ControlResponse
        do { again = try JSONDecoder().decode(ControlResponse.self, from: try JSONEncoder().encode(response)) } catch {
            throw FuzzViolation("control", "an accepted response does not re-encode: \(error)")
        }
        guard again.ok == response.ok, again.error == response.error, again.flushed == response.flushed,
              again.openFilesCut == response.openFilesCut, again.openFiles == response.openFiles, again.errno == response.errno else {
            throw FuzzViolation("control", "response changed on encode/decode")
        }
    }
}

func controlSeeds() -> [(name: String, bytes: [UInt8])] {
    [("stats", #"{"op":"stats"}"#),
     ("flush", #"{"op":"flush","reason":"cmkfs cache flush"}"#),
     ("flush-key", #"{"op":"flush-key","key_id":"mk-0123456789abcdef","version":2,"reason":"key revoke"}"#),
     ("relabel", #"{"op":"relabel"}"#),
     ("rekey", #"{"op":"rekey","path":"/dir/a file"}"#),
     ("audit", #"{"op":"audit","event":"rotate","result":"error","error":"interrupted","key_id":"mk-0123456789abcdef","version":3,"file_id":"ed1843116f1fd87bca3bd532b53a4d71","path":"/a\n\"b\"","reason":"started: 12 files \u0001","durable":false}"#),
     ("answer-stats", #"{"ok":true,"stats":{"entries":3,"pinned":1,"capacity":4096,"hits":10,"misses":2,"evictions":0,"flushed":0,"expired":0,"oldest_lease_age_s":1.5,"idle_ttl_s":300,"max_lifetime_s":3600,"lease_renew_s":300,"provider":{"state":"ok","checked_s_ago":2,"detail":null}},"open_files":1}"#),
     ("answer-flush", #"{"ok":true,"flushed":3,"open_files_cut":1,"elapsed_ms":0.25}"#),
     ("answer-error", #"{"ok":false,"error":"permission denied: only root or the volume's owner may control the mount","errno":13}"#)]
        .map { ($0.0, Array($0.1.utf8)) }
}
