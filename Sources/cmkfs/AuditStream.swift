import Foundation
import Glibc
import CMKAudit
import CMKSystem
import CMKVolume

/// One record as `show` and `export` read it (checked by `AuditTail.check` first): its line and the byte ranges of its
/// fields, read by a scanner for the flat objects the writer makes (docs/audit-format.md, "Byte
/// level") — no JSON object per record, so tens of thousands of records a second stream through.
struct AuditLine {
    let raw: ArraySlice<UInt8>
    /// (key, value token) of each field in line order; a string token keeps its quotes.
    let fields: [(key: ArraySlice<UInt8>, value: ArraySlice<UInt8>)]
    /// The path in clear: as logged (format 1), opened with the path key (format 2), or
    /// `(sealed)` when the key is not at hand.
    let path: String?

    /// Nil for a line that is not a flat JSON object (skipped, as verify names it).
    init?(_ raw: ArraySlice<UInt8>, seal: AuditPathSeal?) {
        guard let fields = Self.scan(raw) else { return nil }
        self.raw = raw
        self.fields = fields
        let logged = Self.string(Self.find(fields, "path"))
        if let logged, (Self.find(fields, "v").flatMap { Int(String(decoding: $0, as: UTF8.self)) } ?? 1) >= 2 {
            path = seal.map { $0.open(logged) ?? "(does not open: altered)" } ?? "(sealed)"
        } else {
            path = logged
        }
    }

    func token(_ key: String) -> ArraySlice<UInt8>? { Self.find(fields, key) }
    /// A field as text: a string decoded, a number as written; nil when absent or null.
    func text(_ key: String) -> String? {
        guard let t = token(key), !t.elementsEqual("null".utf8) else { return nil }
        return t.first == UInt8(ascii: "\"") ? Self.string(t) : String(decoding: t, as: UTF8.self)
    }
    var seq: UInt64? { token("seq").flatMap { UInt64(String(decoding: $0, as: UTF8.self)) } }
    var fileID: String? { text("file") }

    /// The line with `path` in clear (or `(sealed)`, `(does not open: altered)`) and the sealed
    /// form kept as `path_sealed` (so a SIEM reads names); the line as logged for a path logged
    /// in clear (format 1) or none.
    var opened: ArraySlice<UInt8> {
        guard let value = token("path"), let logged = Self.string(value), let path, path != logged else { return raw }
        var out = [UInt8]()
        out.reserveCapacity(raw.count + path.utf8.count + 16)
        out += raw[raw.startIndex..<value.startIndex]
        AuditLine.quote(path, into: &out)
        out += Array(#","path_sealed":"#.utf8)
        out += raw[value.startIndex...]
        return out[...]
    }

    /// The `show` line.
    var summary: String {
        func s(_ k: String) -> String? { text(k) }
        var parts = [s("time") ?? "", "#" + (s("seq") ?? "?"), s("event") ?? "?", s("result") ?? "?"]
        if let e = s("errno") { parts.append("errno=\(e)" + (s("errno_name").map { " (\($0))" } ?? "")) }
        if let p = path { parts.append(p) }
        if let u = s("uid") { parts.append("uid=\(u) gid=\(s("gid") ?? "?") pid=\(s("pid") ?? "?") (\(s("process") ?? "?"))") }
        if let l = s("login_uid"), l != String(UInt32.max) {
            parts.append("login=\(s("login_user").map { "\($0)(\(l))" } ?? l)")
        }
        if let k = s("key") { parts.append("key=\(k) v\(s("key_version") ?? "?")") }
        if let c = s("cache") { parts.append("cache=\(c)") }
        if let r = s("kms_request") { parts.append("kms_request=\(r)" + (s("kms_server_request").map { " (server: \($0))" } ?? "")) }
        if let d = s("detail") { parts.append("— \(d)") }
        if let e = s("error") { parts.append("error: \(e)") }
        return parts.joined(separator: " ")
    }

    static func find(_ fields: [(key: ArraySlice<UInt8>, value: ArraySlice<UInt8>)], _ key: String) -> ArraySlice<UInt8>? {
        var key = key
        return key.withUTF8 { k in fields.first { $0.key.elementsEqual(k) }?.value }
    }

    /// The fields of a flat record line (`AuditRecordScan.fields`).
    static func scan(_ line: ArraySlice<UInt8>) -> [(key: ArraySlice<UInt8>, value: ArraySlice<UInt8>)]? {
        AuditRecordScan.fields(line)
    }

    /// A string token decoded; nil for anything else (`AuditRecordScan.string`).
    static func string(_ token: ArraySlice<UInt8>?) -> String? { AuditRecordScan.string(token) }

    /// `text` as a JSON string, escaped as the writer escapes (docs/audit-format.md, "Byte level").
    static func quote(_ text: String, into out: inout [UInt8]) {
        let hex = Array("0123456789abcdef".utf8)
        out.append(UInt8(ascii: "\""))
        for c in text.utf8 {
            switch c {
            case UInt8(ascii: "\""): out += [0x5C, 0x22]
            case UInt8(ascii: "\\"): out += [0x5C, 0x5C]
            case 0x0A: out += [0x5C, UInt8(ascii: "n")]
            case 0x09: out += [0x5C, UInt8(ascii: "t")]
            case 0x0D: out += [0x5C, UInt8(ascii: "r")]
            case 0..<0x20, 0x7F: out += Array("\\u00".utf8) + [hex[Int(c >> 4)], hex[Int(c & 0xF)]]
            default: out.append(c)
            }
        }
        out.append(UInt8(ascii: "\""))
    }
}

/// Standard output in 64 KiB writes, flushed after each pass over the log (so `--follow`
/// prints a record as soon as it is read, and a pipe never waits on a buffer).
struct RecordOutput {
    var bytes: [UInt8] = []

    init() { bytes.reserveCapacity(1 << 17) }

    mutating func line<C: Collection>(_ line: C) throws(CMKError) where C.Element == UInt8 {
        bytes += line
        bytes.append(0x0A)
        if bytes.count >= 1 << 16 { try flush() }
    }

    mutating func flush() throws(CMKError) {
        do { try Descriptor(rawValue: STDOUT_FILENO).writeAll(bytes) } catch {
            throw CMKError(.io, "cannot write the records to standard output: \(error.errno)")
        }
        bytes.removeAll(keepingCapacity: true)
    }
}
