import Glibc
import CMKCrypto
import CMKSystem

/// What a writer puts in every record it writes, escaped once when it opens the log rather
/// than per record: the volume id, the host, the record id's session prefix, the mountpoint
/// and the version (`AuditRecord.prepare`).
public struct AuditRecordConstants: Sendable {
    /// `,"volume":"…"`
    let volume: [UInt8]
    /// `,"host":"…"`
    let host: [UInt8]
    /// `,"id":"SESSION-` (the seq follows), or nil for a writer without record ids.
    let idPrefix: [UInt8]?
    /// `,"mountpoint":"…"` when there is one, then `,"cmkfs_version":"…"`; empty without a writer.
    let writerTail: [UInt8]

    public init(volumeID: String, host hostName: String, writer: AuditWriterFields?) {
        func escaped(_ build: (inout JSONLineWriter) -> Void) -> [UInt8] {
            var w = JSONLineWriter(empty: 64)
            build(&w)
            return w.bytes
        }
        volume = escaped { $0.field("volume", volumeID) }
        host = escaped { $0.field("host", hostName) }
        idPrefix = writer.map { writer in
            escaped { w in
                w.key("id", first: false)
                w.bytes.append(UInt8(ascii: "\""))
                w.escaped(writer.session)
                w.bytes.append(UInt8(ascii: "-"))
            }
        }
        writerTail = escaped { w in
            if let mountpoint = writer?.mountpoint { w.field("mountpoint", mountpoint) }
            if let writer { w.field("cmkfs_version", writer.version) }
        }
    }
}

/// A record's bytes that depend on neither its seq, its time nor its `prev`, built before the
/// log's lock is taken, so that under the lock only those three are written around them, the
/// MAC computed and the line written (docs/audit-format.md fixes the order: `seq` and `time`
/// come first, the `id` holds the seq again, `prev` comes last).
public struct PreparedRecord: Sendable {
    /// From `,"event":` to the `id`'s session prefix (or, without one, to the end of the fields
    /// before `prev`), then the rest up to and including `,"prev":"`.
    public internal(set) var bytes: [UInt8]
    /// Where the `id`'s seq goes in `bytes` (nil: no `id`).
    var idSeqAt: Int?
}

extension AuditRecord {
    static let head = Array(#"{"v":2,"seq":"#.utf8)
    static let timeKey = Array(#","time":""#.utf8)
    static let prevKey = Array(#","prev":""#.utf8)
    /// `"YYYY-MM-DDTHH:MM:SS.uuuuuuZ"` with its quotes.
    static let timeCount = 29

    /// The parts of `e`'s record that `line(seq:time:prev:…)` does not write, in the order and
    /// with the escaping of `body` (`AuditRecordFastPathTests` compares the two byte for byte).
    /// `path` is the field's text (the writer's sealed path), in place of `e.path`.
    public static func prepare(_ e: AuditEvent, path: String?, _ c: AuditRecordConstants) -> PreparedRecord {
        var w = JSONLineWriter(empty: 640)
        w.field(raw: #","event":"#, e.event)
        w.field(raw: #","result":"#, e.result)
        w.field(raw: #","errno":"#, int: e.errno.map(Int.init))
        w.field(raw: #","error":"#, e.error)
        w.bytes.append(contentsOf: c.volume)
        w.field(raw: #","file":"#, e.fileID)
        w.field(raw: #","path":"#, path)
        w.field(raw: #","key":"#, e.keyID)
        w.field(raw: #","key_version":"#, int: e.keyVersion)
        w.field(raw: #","cache":"#, e.cache)
        w.field(raw: #","uid":"#, int: e.uid)
        w.field(raw: #","gid":"#, int: e.gid)
        w.field(raw: #","pid":"#, int: e.pid)
        w.field(raw: #","process":"#, e.process)
        w.bytes.append(contentsOf: c.host)
        w.field(raw: #","detail":"#, e.detail)
        if let id = e.kmsRequest { w.field(raw: #","kms_request":"#, id) }
        if let id = e.kmsServerRequest { w.field(raw: #","kms_server_request":"#, id) }
        var idSeqAt: Int?
        if let prefix = c.idPrefix {
            w.bytes.append(contentsOf: prefix)
            idSeqAt = w.bytes.count
            w.bytes.append(UInt8(ascii: "\""))
        }
        if let code = e.errno { w.field(raw: #","errno_name":"#, Errno(rawValue: code).symbol) }
        if let uid = e.loginUID { w.raw(#","login_uid":"#); w.decimal(UInt64(uid)) }
        if let name = e.user { w.field(raw: #","user":"#, name) }
        if let name = e.loginUser { w.field(raw: #","login_user":"#, name) }
        w.bytes.append(contentsOf: c.writerTail)
        w.bytes.append(contentsOf: prevKey)
        return PreparedRecord(bytes: w.bytes, idSeqAt: idSeqAt)
    }

    /// The full line of a prepared record, the same bytes as `line(body: body(…), mac:)`:
    /// written into one buffer of the line's size (seq, time, the prepared bytes, `prev`), MACed
    /// in place and closed with the MAC's hex. Runs under the log's lock: no other allocation
    /// than the line and the MAC's text.
    public static func line(seq: UInt64, time: timespec, prev: String, _ p: PreparedRecord,
                     mac context: HMACSHA256.Keyed?, key: SecretBytes) throws(CryptoError) -> (line: [UInt8], mac: String) {
        var w = JSONLineWriter(empty: head.count + 2 * 20 + timeCount + p.bytes.count + 64 + 1 + macSuffixLength + 1)
        w.bytes.append(contentsOf: head)
        w.decimal(seq)
        w.bytes.append(contentsOf: timeKey)
        appendTime(&w.bytes, seconds: time.tv_sec, microseconds: Int(time.tv_nsec / 1000))
        w.bytes.append(UInt8(ascii: "\""))
        p.bytes.withUnsafeBufferPointer { b in
            guard let at = p.idSeqAt else { return w.bytes.append(contentsOf: b) }
            w.bytes.append(contentsOf: UnsafeBufferPointer(rebasing: b[..<at]))
            w.decimal(seq)
            w.bytes.append(contentsOf: UnsafeBufferPointer(rebasing: b[at...]))
        }
        var prev = prev
        prev.withUTF8 { w.bytes.append(contentsOf: $0) }
        w.bytes.append(UInt8(ascii: "\""))
        var line = w.bytes
        let bodyCount = line.count
        var mac = (UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        // Array's closures rethrow untyped errors: the typed one is carried out as a Result.
        let done: Result<Void, CryptoError> = line.withUnsafeBytes { b in
            withUnsafeMutableBytes(of: &mac) { m in
                Result { () throws(CryptoError) in
                    let body = UnsafeRawBufferPointer(rebasing: b[..<bodyCount])
                    if let context { try context.mac(body, into: m) } else {
                        let one = try HMACSHA256.mac(key: key, Array(body))
                        m.copyBytes(from: one)
                    }
                }
            }
        }
        try done.get()
        line.append(contentsOf: macPrefix)
        let hex = withUnsafeBytes(of: &mac) { m in
            String(unsafeUninitializedCapacity: 64) { out in
                for (i, b) in m.enumerated() {
                    out[2 * i] = hexDigits[Int(b >> 4)]
                    out[2 * i + 1] = hexDigits[Int(b & 0x0F)]
                }
                return 64
            }
        }
        var text = hex
        text.withUTF8 { line.append(contentsOf: $0) }
        line.append(contentsOf: [UInt8(ascii: "\""), UInt8(ascii: "}"), 0x0A])
        return (line, hex)
    }

    /// `time(seconds:microseconds:)`'s 27 characters appended to `out`.
    static func appendTime(_ out: inout [UInt8], seconds: Int, microseconds: Int) {
        var t = seconds
        var tm = tm()
        gmtime_r(&t, &tm)
        func put(_ value: Int, _ width: Int) {
            var digits: (UInt64, UInt64) = (0, 0)
            withUnsafeMutableBytes(of: &digits) { d in
                var v = value
                for k in stride(from: width - 1, through: 0, by: -1) {
                    d[k] = UInt8(ascii: "0") + UInt8(v % 10)
                    v /= 10
                }
                out.append(contentsOf: UnsafeRawBufferPointer(rebasing: d[..<width]))
            }
        }
        func put(_ c: Unicode.Scalar) { out.append(UInt8(ascii: c)) }
        put(Int(tm.tm_year) + 1900, 4); put("-"); put(Int(tm.tm_mon) + 1, 2); put("-"); put(Int(tm.tm_mday), 2); put("T")
        put(Int(tm.tm_hour), 2); put(":"); put(Int(tm.tm_min), 2); put(":"); put(Int(tm.tm_sec), 2); put(".")
        put(microseconds, 6); put("Z")
    }

    /// The time now, as `line(seq:time:…)` takes it.
    public static func clock() -> timespec {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return ts
    }
}
