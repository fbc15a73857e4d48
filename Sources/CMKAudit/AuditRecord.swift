import Glibc
import CMKCrypto
import CMKSystem

/// The byte-level record format (docs/audit-format.md): one JSON object a line, fields always
/// present and always in this order, so the bytes a MAC covers are fixed (except `kms_request`
/// and `kms_server_request`, written only when set, so records without them are byte for byte
/// what earlier versions wrote and earlier versions still verify records with them):
///
///     {"v":1,"seq":…,"time":…,"event":…,…,"prev":"<64 hex>","mac":"<64 hex>"}\n
///
/// `body` is everything before `,"mac":"`; `mac` = HMAC-SHA256(audit key, body). `prev` is the
/// previous record's `mac` (64 zeros for seq 1), so every record is chained to the one before.
public enum AuditRecord {
    /// 2: `path` is sealed (AuditPathSeal). Version-1 records (paths in clear) stay valid.
    public static let version = 2
    /// The `prev` of the first record.
    public static let genesis = String(repeating: "0", count: 64)
    static let macPrefix = Array(#","mac":""#.utf8)
    /// `,"mac":"` + 64 hex + `"}`.
    static let macSuffixLength = macPrefix.count + 64 + 2

    /// The body of a record (the MACed bytes). `writer` adds the fields the writer knows of
    /// every record it writes (`id`, `mountpoint`, `cmkfs_version`).
    public static func body(seq: UInt64, time: String, volumeID: String, host: String, prev: String,
                            _ e: AuditEvent, writer: AuditWriterFields? = nil) -> [UInt8] {
        var w = JSONLineWriter()
        w.field("v", int: version, first: true)
        // Written as the UInt64 it is: a resumed log continues from whatever seq its last line
        // names (chainFields reads up to 19 digits), which may exceed Int.max.
        w.field("seq", uint: seq)
        w.field("time", time)
        w.field("event", e.event)
        w.field("result", e.result)
        w.field("errno", int: e.errno.map(Int.init))
        w.field("error", e.error)
        w.field("volume", volumeID)
        w.field("file", e.fileID)
        w.field("path", e.path)
        w.field("key", e.keyID)
        w.field("key_version", int: e.keyVersion)
        w.field("cache", e.cache)
        w.field("uid", int: e.uid)
        w.field("gid", int: e.gid)
        w.field("pid", int: e.pid)
        w.field("process", e.process)
        w.field("host", host)
        w.field("detail", e.detail)
        if let id = e.kmsRequest { w.field("kms_request", id) }
        if let id = e.kmsServerRequest { w.field("kms_server_request", id) }
        // SIEM fields (docs/audit-format.md): written only when set, like the two above, so the
        // format stays 2 and every earlier record and verifier is unaffected.
        if let writer { w.field("id", joining: writer.session, seq) }
        if let code = e.errno { w.field("errno_name", Errno(rawValue: code).symbol) }
        if let uid = e.loginUID { w.field("login_uid", uint: UInt64(uid)) }
        if let name = e.user { w.field("user", name) }
        if let name = e.loginUser { w.field("login_user", name) }
        if let mountpoint = writer?.mountpoint { w.field("mountpoint", mountpoint) }
        if let writer { w.field("cmkfs_version", writer.version) }
        w.field("prev", prev)
        return w.bytes
    }

    /// The full line: body, MAC, closing brace, newline.
    public static func line(body: [UInt8], key: SecretBytes) throws(CryptoError) -> (line: [UInt8], mac: String) {
        finish(body, mac: try HMACSHA256.mac(key: key, body))
    }

    /// `line(body:key:)` with the audit key's HMAC context kept by the writer (its pads are
    /// hashed once, not per record: a context built per record was a third of a record's cost).
    public static func line(body: [UInt8], mac context: HMACSHA256.Keyed) throws(CryptoError) -> (line: [UInt8], mac: String) {
        var mac = [UInt8](repeating: 0, count: HMACSHA256.size)
        // Array's closures rethrow untyped errors: the typed one is carried out as a Result.
        let done: Result<Void, CryptoError> = body.withUnsafeBytes { b in
            mac.withUnsafeMutableBytes { m in Result { () throws(CryptoError) in try context.mac(b, into: m) } }
        }
        try done.get()
        return finish(body, mac: mac)
    }

    /// `body` + `,"mac":"<hex>"}` + newline, grown in place.
    private static func finish(_ body: [UInt8], mac: [UInt8]) -> (line: [UInt8], mac: String) {
        var line = body
        line.reserveCapacity(body.count + macSuffixLength + 1)
        line.append(contentsOf: macPrefix)
        let hexStart = line.count
        for b in mac { line.append(hexDigits[Int(b >> 4)]); line.append(hexDigits[Int(b & 0x0F)]) }
        let hex = String(decoding: line[hexStart...], as: UTF8.self)
        line.append(contentsOf: [UInt8(ascii: "\""), UInt8(ascii: "}"), 0x0A])
        return (line, hex)
    }

    static let hexDigits = Array("0123456789abcdef".utf8)

    /// Splits a line (without its newline) into body and MAC hex, or nil if it is not shaped
    /// like a record.
    public static func split(_ line: ArraySlice<UInt8>) -> (body: ArraySlice<UInt8>, mac: String)? {
        guard line.count > macSuffixLength, line.first == UInt8(ascii: "{"), line.last == UInt8(ascii: "}") else { return nil }
        let start = line.endIndex - macSuffixLength
        guard line[start..<start + macPrefix.count].elementsEqual(macPrefix) else { return nil }
        let hex = line[(start + macPrefix.count)..<(line.endIndex - 2)]
        guard hex.allSatisfy(isLowerHex), line[line.endIndex - 2] == UInt8(ascii: "\"") else { return nil }
        return (line[line.startIndex..<start], String(decoding: hex, as: UTF8.self))
    }

    /// The `seq` and `prev` of a body, read from their fixed places.
    public static func chainFields(_ body: ArraySlice<UInt8>) -> (seq: UInt64, prev: String)? {
        guard let head = [Array(#"{"v":2,"seq":"#.utf8), Array(#"{"v":1,"seq":"#.utf8)].first(where: { body.starts(with: $0) }) else { return nil }
        var i = body.startIndex + head.count
        var seq: UInt64 = 0
        var digits = 0
        while i < body.endIndex, let d = digit(body[i]) { seq = seq &* 10 &+ UInt64(d); i += 1; digits += 1 }
        let tail = Array(#","prev":""#.utf8)
        guard digits > 0, digits < 20, body.count >= tail.count + 65 else { return nil }
        let prevStart = body.endIndex - 65
        guard body[(prevStart - tail.count)..<prevStart].elementsEqual(tail), body.last == UInt8(ascii: "\"") else { return nil }
        let prev = body[prevStart..<(body.endIndex - 1)]
        guard prev.allSatisfy(isLowerHex) else { return nil }
        return (seq, String(decoding: prev, as: UTF8.self))
    }

    /// The time now, UTC, microseconds: `2026-11-24T02:44:21.123456Z`.
    public static func now() -> String {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return time(seconds: ts.tv_sec, microseconds: Int(ts.tv_nsec / 1000))
    }

    /// `seconds` (since the epoch, UTC) and `microseconds` as `now()` writes them: written digit
    /// by digit into one buffer (string interpolation of padded parts was 15 allocations a record).
    static func time(seconds: Int, microseconds: Int) -> String {
        var t = seconds
        var tm = tm()
        gmtime_r(&t, &tm)
        return String(unsafeUninitializedCapacity: 27) { out in
            var i = 0
            func put(_ value: Int, _ width: Int) {
                var v = value
                for k in stride(from: width - 1, through: 0, by: -1) {
                    out[i + k] = UInt8(ascii: "0") + UInt8(v % 10)
                    v /= 10
                }
                i += width
            }
            func put(_ c: Unicode.Scalar) { out[i] = UInt8(ascii: c); i += 1 }
            put(Int(tm.tm_year) + 1900, 4); put("-"); put(Int(tm.tm_mon) + 1, 2); put("-"); put(Int(tm.tm_mday), 2); put("T")
            put(Int(tm.tm_hour), 2); put(":"); put(Int(tm.tm_min), 2); put(":"); put(Int(tm.tm_sec), 2); put(".")
            put(microseconds, 6); put("Z")
            return i
        }
    }

    static func isLowerHex(_ c: UInt8) -> Bool { (c >= 0x30 && c <= 0x39) || (c >= 0x61 && c <= 0x66) }
    static func digit(_ c: UInt8) -> Int? { c >= 0x30 && c <= 0x39 ? Int(c - 0x30) : nil }
}

/// What a writer adds to each record it writes, the same for all of them.
public struct AuditWriterFields: Sendable {
    /// 32 hex digits drawn when the writer opened the log; a record's `id` is `SESSION-SEQ`.
    public let session: String
    /// The mountpoint when the writer is a mount (nil for a command on an unmounted volume).
    public let mountpoint: String?
    /// `cmkfs_version`.
    public let version: String

    public init(session: String, mountpoint: String?, version: String = cmkfsVersion) {
        self.session = session
        self.mountpoint = mountpoint
        self.version = version
    }
}

/// The version of cmkfs (`cmkfs --version`, the `cmkfs_version` of every record it writes).
public let cmkfsVersion = "0.1.0"

/// Lower-case hex of `bytes`, written straight into the string's storage (a record's file id
/// and MAC are 16 and 32 bytes: an array grown per digit and copied was a tenth of a record).
public func hexString<C: Collection>(_ bytes: C) -> String where C.Element == UInt8 {
    let count = bytes.count * 2
    guard count > 0 else { return "" }
    return String(unsafeUninitializedCapacity: count) { out in
        var i = 0
        for b in bytes {
            out[i] = AuditRecord.hexDigits[Int(b >> 4)]
            out[i + 1] = AuditRecord.hexDigits[Int(b & 0x0F)]
            i += 2
        }
        return count
    }
}

/// `hexString` of contiguous bytes (an array's), without a generic walk of the collection.
public func hexString(_ bytes: [UInt8]) -> String {
    bytes.withUnsafeBytes { b in hexString(b) }
}

/// `hexString` of a raw buffer.
public func hexString(_ bytes: UnsafeRawBufferPointer) -> String {
    let count = bytes.count * 2
    guard count > 0 else { return "" }
    return String(unsafeUninitializedCapacity: count) { out in
        AuditRecord.hexDigits.withUnsafeBufferPointer { digits in
            for (k, b) in bytes.enumerated() {
                out[2 * k] = digits[Int(b >> 4)]
                out[2 * k + 1] = digits[Int(b & 0x0F)]
            }
        }
        return count
    }
}

/// Bytes from lower- or upper-case hex, or nil.
public func bytesFromHex(_ text: String) -> [UInt8]? {
    let chars = Array(text.utf8)
    guard chars.count % 2 == 0 else { return nil }
    var out = [UInt8]()
    for i in stride(from: 0, to: chars.count, by: 2) {
        guard let b = UInt8(String(decoding: chars[i...i + 1], as: UTF8.self), radix: 16) else { return nil }
        out.append(b)
    }
    return out
}

/// A JSON object written field by field in a fixed order, with a deterministic escaping:
/// `"` `\` and control characters are escaped (`\"`, `\\`, `\n`, `\t`, `\r`, else `\u00XX`);
/// everything else is the UTF-8 of the string as is.
///
/// Numbers and runs of bytes that need no escape are appended straight into `bytes`, with no
/// intermediate `String` or `Array`: a record is written under the log's lock, once per open.
struct JSONLineWriter {
    var bytes: [UInt8] = [UInt8(ascii: "{")]

    init() { bytes.reserveCapacity(768) }

    /// A writer of fields into an empty buffer of `capacity` (parts of a line, not a whole object).
    init(empty capacity: Int) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }

    /// Field names are ours: plain ASCII with nothing to escape.
    mutating func key(_ name: StaticString, first: Bool) {
        if !first { bytes.append(UInt8(ascii: ",")) }
        bytes.append(UInt8(ascii: "\""))
        bytes.append(contentsOf: UnsafeBufferPointer(start: name.utf8Start, count: name.utf8CodeUnitCount))
        bytes.append(UInt8(ascii: "\""))
        bytes.append(UInt8(ascii: ":"))
    }

    /// Bytes of ours (a field's `,"name":` whole): one append, not five.
    mutating func raw(_ text: StaticString) {
        bytes.append(contentsOf: UnsafeBufferPointer(start: text.utf8Start, count: text.utf8CodeUnitCount))
    }

    /// `prefix` (`,"name":`) and the string or `null`.
    mutating func field(raw prefix: StaticString, _ value: String?) {
        raw(prefix)
        if let value { string(value) } else { null() }
    }

    /// `prefix` (`,"name":`) and the number or `null`.
    mutating func field(raw prefix: StaticString, int value: Int?) {
        raw(prefix)
        guard let value else { return null() }
        if value < 0 { bytes.append(UInt8(ascii: "-")) }
        decimal(UInt64(value.magnitude))
    }

    mutating func field(_ name: StaticString, int value: Int?, first: Bool = false) {
        key(name, first: first)
        guard let value else { return null() }
        if value < 0 { bytes.append(UInt8(ascii: "-")) }
        decimal(UInt64(value.magnitude))
    }

    mutating func field(_ name: StaticString, uint value: UInt64) {
        key(name, first: false)
        decimal(value)
    }

    mutating func field(_ name: StaticString, _ value: String?) {
        key(name, first: false)
        if let value { string(value) } else { null() }
    }

    /// `"PREFIX-SEQ"` (a record id), without building the string first.
    mutating func field(_ name: StaticString, joining prefix: String, _ seq: UInt64) {
        key(name, first: false)
        bytes.append(UInt8(ascii: "\""))
        escaped(prefix)
        bytes.append(UInt8(ascii: "-"))
        decimal(seq)
        bytes.append(UInt8(ascii: "\""))
    }

    private mutating func null() { raw("null") }

    mutating func decimal(_ value: UInt64) {
        var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)   // 24 bytes: room for UInt64.max's 20 digits
        withUnsafeMutableBytes(of: &digits) { d in
            var v = value
            var n = d.count
            repeat {
                n -= 1
                d[n] = UInt8(ascii: "0") + UInt8(v % 10)
                v /= 10
            } while v > 0
            bytes.append(contentsOf: UnsafeRawBufferPointer(rebasing: d[n...]))
        }
    }

    mutating func string(_ s: String) {
        bytes.append(UInt8(ascii: "\""))
        escaped(s)
        bytes.append(UInt8(ascii: "\""))
    }

    /// `s` escaped, without quotes: runs with nothing to escape are copied whole.
    mutating func escaped(_ s: String) {
        var s = s
        s.withUTF8 { u in
            var run = 0
            for i in 0..<u.count {
                let c = u[i]
                guard c < 0x20 || c == 0x7F || c == UInt8(ascii: "\"") || c == UInt8(ascii: "\\") else { continue }
                if run < i { bytes.append(contentsOf: UnsafeBufferPointer(rebasing: u[run..<i])) }
                run = i + 1
                switch c {
                case UInt8(ascii: "\""): bytes += [0x5C, 0x22]
                case UInt8(ascii: "\\"): bytes += [0x5C, 0x5C]
                case 0x0A: bytes += [0x5C, UInt8(ascii: "n")]
                case 0x09: bytes += [0x5C, UInt8(ascii: "t")]
                case 0x0D: bytes += [0x5C, UInt8(ascii: "r")]
                default:
                    bytes += Array("\\u00".utf8) + [AuditRecord.hexDigits[Int(c >> 4)], AuditRecord.hexDigits[Int(c & 0xF)]]
                }
            }
            if run < u.count { bytes.append(contentsOf: UnsafeBufferPointer(rebasing: u[run...])) }
        }
    }
}
