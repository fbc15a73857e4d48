import CMKKeys

/// The request context on the wire: an optional trailer after the fields of `wrap` and
/// `unwrap` (docs/kms-protocol.md, "Request context"). A KMS from before it never reads past
/// the op's own fields, so it ignores the trailer; a request without one (a client from before)
/// is logged with an id the server makes.
enum RequestContextWire {
    /// The trailer's first byte: the context's layout version.
    static let tag: UInt8 = 1
    /// Longest string field accepted or sent (bytes): ids, names and reasons are short.
    static let maxField = 1024

    static func write(_ request: KeyRequest?, to frame: WireFrame) {
        guard let request else { return }
        frame.u8(tag)
        frame.string(clip(request.id)).string(clip(request.operation))
        frame.u8((request.uid != nil ? 1 : 0) | (request.pid != nil ? 2 : 0))
        frame.u32(Int(request.uid ?? 0)).u32(Int(UInt32(bitPattern: request.pid ?? 0)))
        frame.string(clip(request.process ?? "")).string(clip(request.host)).string(clip(request.reason ?? ""))
    }

    /// The trailer, or nil when the request ends before one. A trailer that is there but
    /// malformed makes the request malformed (`bad_request`).
    static func read(_ frame: WireFrame) throws(WireFrame.Malformed) -> KeyRequest? {
        guard !frame.atEnd else { return nil }
        guard try frame.readU8() == tag else { throw WireFrame.Malformed() }
        let id = try field(frame), operation = try field(frame)
        let flags = try frame.readU8()
        let uid = UInt32(try frame.readU32()), pid = Int32(bitPattern: UInt32(try frame.readU32()))
        let process = try field(frame), host = try field(frame), reason = try field(frame)
        guard !id.isEmpty else { throw WireFrame.Malformed() }
        return KeyRequest(operation: operation, uid: flags & 1 != 0 ? uid : nil, pid: flags & 2 != 0 ? pid : nil,
                          process: process.isEmpty ? nil : process, host: host,
                          reason: reason.isEmpty ? nil : reason, id: id)
    }

    private static func field(_ frame: WireFrame) throws(WireFrame.Malformed) -> String {
        let bytes = try frame.readBytes()
        guard bytes.count <= maxField else { throw WireFrame.Malformed() }
        return String(decoding: bytes, as: UTF8.self)
    }

    private static func clip(_ s: String) -> String {
        guard s.utf8.count > maxField else { return s }
        var out = ""
        for c in s where out.utf8.count + c.utf8.count <= maxField { out.append(c) }
        return out
    }
}
