import Foundation
import Glibc
import CMKAudit
import CMKCrypto
import CMKSystem

// The audit log: record lines, checkpoints, and whole segments through the verifier.

let fuzzAuditKey = fixedKey(0x5A)
private let macPrefix = Array(#","mac":""#.utf8)

/// One line through `AuditRecord.split`/`chainFields`, the same bytes as a checkpoint through
/// `AuditCheckpoint.decode`, and the input's bytes as the fields of a new record, whose line
/// must split back into the same seq, prev and MAC and parse as JSON holding the same strings.
public func fuzzAuditRecord(_ data: [UInt8]) throws(FuzzViolation) {
    if let parts = AuditRecord.split(data[...]) {
        let rebuilt = Array(parts.body) + macPrefix + Array(parts.mac.utf8) + Array(#""}"#.utf8)
        guard rebuilt == data, parts.mac.utf8.count == 64 else {
            throw FuzzViolation("audit-record", "split does not give back the line it split")
        }
        if let chain = AuditRecord.chainFields(parts.body) {
            let head = Array(#"{"v":2,"seq":"#.utf8)  // v1 and v2 prefixes have the same length
            let digits = parts.body.dropFirst(head.count).prefix { $0 >= 0x30 && $0 <= 0x39 }
            guard UInt64(String(decoding: digits, as: UTF8.self)) == chain.seq, chain.prev.utf8.count == 64 else {
                throw FuzzViolation("audit-record", "chainFields read seq \(chain.seq) from other digits, or a short prev")
            }
        }
    }
    if let cp = try? AuditCheckpoint.decode(data, key: fuzzAuditKey) {
        let again: AuditCheckpoint?
        do { again = try AuditCheckpoint.decode(try cp.encoded(key: fuzzAuditKey), key: fuzzAuditKey) } catch { again = nil }
        guard again == cp else { throw FuzzViolation("audit-record", "a decoded checkpoint does not survive encode/decode") }
    }
    try checkWriter(fields(of: data), target: "audit-record")
}

/// Fields for a record from arbitrary bytes: a seq, then NUL-separated strings (repaired to
/// valid UTF-8, as a Swift `String` always is).
private func fields(of data: [UInt8]) -> (seq: UInt64, strings: [String]) {
    var r = ByteReader(data)
    let seq = r.u64() % 10_000_000_000_000_000_000
    let strings = split(r.rest, at: 0, limit: 10).map { String(decoding: $0, as: UTF8.self) }
    return (seq, strings)
}

/// Writes a record from `strings` as the writer would, then reads it back as the verifier and a
/// JSON parser (a SIEM reading `audit export`) would.
func checkWriter(_ input: (seq: UInt64, strings: [String]), target: String) throws(FuzzViolation) {
    func s(_ i: Int) -> String? { i < input.strings.count ? input.strings[i] : nil }
    let event = AuditEvent(s(0) ?? "open", result: s(1) ?? "ok", error: s(2), fileID: s(3), path: s(4), keyID: s(5),
                           keyVersion: 1, uid: 0, gid: 0, pid: 1, process: s(6), detail: s(7))
    let prev = String(repeating: "ab", count: 32)
    let body = AuditRecord.body(seq: input.seq, time: AuditRecord.now(), volumeID: s(8) ?? "00", host: s(9) ?? "host",
                                prev: prev, event)
    let line: [UInt8]
    let mac: String
    do { (line, mac) = try AuditRecord.line(body: body, key: fuzzAuditKey) } catch {
        throw FuzzViolation(target, "cannot MAC a record: \(error)")
    }
    guard line.last == 0x0A, !line.dropLast().contains(0x0A) else {
        throw FuzzViolation(target, "a record is not exactly one line")
    }
    guard let parts = AuditRecord.split(line.dropLast()), let chain = AuditRecord.chainFields(parts.body),
          parts.mac == mac, chain.seq == input.seq, chain.prev == prev else {
        throw FuzzViolation(target, "a record the writer made does not split back into its seq, prev and mac")
    }
    let object: Any
    do { object = try JSONSerialization.jsonObject(with: Data(line.dropLast())) } catch {
        throw FuzzViolation(target, "a record is not valid JSON: \(error)")
    }
    guard let dict = object as? [String: Any] else { throw FuzzViolation(target, "a record is not a JSON object") }
    let expected: [(String, String?)] = [("event", event.event), ("result", event.result), ("error", event.error),
                                         ("file", event.fileID), ("path", event.path), ("key", event.keyID),
                                         ("process", event.process), ("detail", event.detail), ("volume", s(8) ?? "00"),
                                         ("host", s(9) ?? "host"), ("prev", prev), ("mac", mac)]
    for (name, value) in expected {
        let got = dict[name]
        if let value {
            guard let text = got as? String, text == value else {
                throw FuzzViolation(target, "field \(name) reads back as \(String(describing: got)), written \(value.debugDescription)")
            }
        } else {
            guard got is NSNull else { throw FuzzViolation(target, "field \(name) was null and reads back as \(String(describing: got))") }
        }
    }
    guard (dict["seq"] as? NSNumber)?.uint64Value == input.seq || input.seq > 1 << 53 else {
        throw FuzzViolation(target, "seq reads back as \(String(describing: dict["seq"]))")
    }
}

/// Up to three segments (separated by 0x1E) through `AuditVerifier.verify`. The first byte
/// chooses what the harness does first, as a writer holding the audit key would: bit 0 re-MACs
/// every line shaped like a record, bit 1 re-chains each `prev` to the line before, bit 2
/// allows a missing head, bit 3 adds a valid checkpoint at seq `flags >> 4`, bit 4 uses the last
/// part as the stored checkpoint. The report must be consistent with the lines it counted.
public func fuzzAuditSegment(_ data: [UInt8]) throws(FuzzViolation) {
    var r = ByteReader(data)
    let flags = r.u8()
    var parts = split(r.rest, at: 0x1E, limit: 4)
    var checkpoint: [UInt8]? = nil
    if flags & 0x10 != 0 && parts.count > 1 { checkpoint = parts.removeLast() }
    var prev = AuditRecord.genesis
    var segments: [[UInt8]] = []
    var macs: [UInt64: String] = [:]
    for part in parts {
        var out: [UInt8] = []
        var lines = split(part, at: 0x0A, limit: Int.max)
        let tail = lines.removeLast()  // bytes after the last newline: a torn record, or nothing
        for line in lines {
            out += rewrite(line, flags: flags, prev: &prev, macs: &macs) + [0x0A]
        }
        segments.append(out + tail)
    }
    if flags & 0x08 != 0 {
        let seq = UInt64(flags >> 4)
        let cp = AuditCheckpoint(count: seq, head: macs[seq] ?? AuditRecord.genesis, time: "2026-11-24T00:00:00.000000Z")
        checkpoint = try? cp.encoded(key: fuzzAuditKey)
    }
    var paths: [String] = []
    for (i, segment) in segments.enumerated() {
        let path = scratchDirectory + "/audit-\(i).log"
        writeFile(path, segment)
        paths.append(path)
    }
    defer { for path in paths { try? Descriptor.cwd.unlink(path) } }
    let report: AuditReport
    do {
        report = try AuditVerifier.verify(segments: paths, key: fuzzAuditKey, checkpoint: checkpoint,
                                          allowMissingHead: flags & 0x04 != 0)
    } catch {
        return
    }
    guard report.intact else { return }
    let complete = segments.reduce(0) { $0 + $1.filter { $0 == 0x0A }.count }
    guard report.records == complete else {
        throw FuzzViolation("audit-segment", "intact with \(report.records) records, but the segments hold \(complete) lines")
    }
    if let first = report.firstSeq, let last = report.lastSeq {
        guard last >= first, last - first + 1 == UInt64(report.records) else {
            throw FuzzViolation("audit-segment", "intact chain from seq \(first) to \(last) with \(report.records) records")
        }
    }
}

/// A line as the writer would have produced it under `flags`: `prev` re-chained and the MAC
/// recomputed. Lines that are not shaped like records are left alone.
private func rewrite(_ line: [UInt8], flags: UInt8, prev: inout String, macs: inout [UInt64: String]) -> [UInt8] {
    guard flags & 0x03 != 0, let parts = AuditRecord.split(line[...]), let chain = AuditRecord.chainFields(parts.body) else {
        return line
    }
    var body = Array(parts.body)
    if flags & 0x02 != 0 {
        body.replaceSubrange((body.count - 65)..<(body.count - 1), with: Array(prev.utf8))
    }
    var mac = parts.mac
    if flags & 0x01 != 0, let computed = try? AuditRecord.line(body: body, key: fuzzAuditKey) {
        mac = computed.mac
    }
    prev = mac
    macs[chain.seq] = mac
    return body + macPrefix + Array(mac.utf8) + Array(#""}"#.utf8)
}

/// Real records made by `AuditRecord`, chained under the fuzz key.
func auditLines(_ count: Int, firstSeq: UInt64 = 1, events: [AuditEvent]? = nil) -> [[UInt8]] {
    var prev = AuditRecord.genesis
    var out: [[UInt8]] = []
    for i in 0..<count {
        let event = events?[i % events!.count] ?? AuditEvent(["open", "create", "truncate", "revoke"][i % 4], result: i == 2 ? "denied" : "ok",
                                                              errno: i == 2 ? 13 : nil, error: i == 2 ? "key disabled" : nil,
                                                              fileID: String(repeating: "ed", count: 16), path: "/dir/file \(i)\t\"q\"",
                                                              keyID: "mk-0123456789abcdef", keyVersion: 1, cache: "miss",
                                                              uid: 0, gid: 0, pid: 42, process: "cat", detail: i == 3 ? "reason: \u{1}" : nil)
        let body = AuditRecord.body(seq: firstSeq + UInt64(i), time: "2026-11-24T02:53:39.98750\(i % 10)Z",
                                    volumeID: String(repeating: "9b", count: 16), host: "build-1", prev: prev, event)
        // try!: HMAC-SHA256 under a fixed 32-byte key fails only if OpenSSL cannot allocate, and a
        // seed generator that cannot make seeds has nothing to fuzz; trapping says so at once.
        let (line, mac) = try! AuditRecord.line(body: body, key: fuzzAuditKey)
        out.append(line)
        prev = mac
    }
    return out
}

func auditRecordSeeds() -> [(name: String, bytes: [UInt8])] {
    let lines = auditLines(4)
    let cp = try! AuditCheckpoint(count: 4, head: String(repeating: "c", count: 64), time: "2026-11-24T02:53:40.000000Z").encoded(key: fuzzAuditKey)
    return [("record", Array(lines[0].dropLast())),
            ("record-with-error", Array(lines[2].dropLast())),
            ("record-with-control-char", Array(lines[3].dropLast())),
            ("checkpoint", cp),
            ("fields", [0, 0, 0, 0, 0, 0, 0, 7] + Array("open\0ok\0\0ed\0/a \"b\"\0mk-1\0cat\0detail\u{7f}\09b\0host".utf8))]
}

func auditSegmentSeeds() -> [(name: String, bytes: [UInt8])] {
    let lines = auditLines(5)
    let cp = try! AuditCheckpoint(count: 5, head: String(decoding: lines[4].dropLast().suffix(66).prefix(64), as: UTF8.self),
                                  time: "2026-11-24T02:53:40.000000Z").encoded(key: fuzzAuditKey)
    let segment = lines.joined()
    return [("one-segment", [0] + Array(segment)),
            ("two-segments-and-checkpoint", [0x10] + Array(lines[0..<3].joined()) + [0x1E] + Array(lines[3...].joined()) + [0x1E] + cp),
            ("torn-tail", [0] + Array(segment) + Array(lines[0].prefix(40))),
            ("rechained-missing-head", [0x07] + Array(auditLines(3, firstSeq: 9).joined())),
            ("harness-checkpoint", [0x38] + Array(segment))]
}
