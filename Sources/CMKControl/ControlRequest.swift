/// One request to a live mount's control socket (`VOLUME/control.sock`). On the wire it is one
/// JSON object on one line, `{"op":"…", …}` (docs/control-protocol.md); that format is fixed, the
/// enum is how both ends hold it. A line that names an unknown op, or lacks what its op needs,
/// does not decode: the error says what is wrong, as the mount answers it.
public enum ControlRequest: Sendable, Equatable {
    /// `stats`: the cache's counters and the number of open files; changes nothing (a client
    /// also sends it to let the mount finish its deferred deletes first).
    case stats
    /// `flush`: drops every cached data key and cuts the open files (the kill switch).
    case flush(reason: String?)
    /// `flush-key`: the same for the data keys under master key `keyID` (one version, or all).
    case flushKey(keyID: String, version: Int?, reason: String?)
    /// `relabel`: after a rotation, cached keys follow their EDEK to the version wrapping it now.
    case relabel
    /// `rekey`: re-encrypt the file at `path` (relative to the mount's root) under a fresh key.
    case rekey(path: String)
    /// `audit`: the mount appends `record` to its log for a command (it owns the log while
    /// mounted), fsynced before the answer when `durable`.
    case audit(ControlAuditRecord, durable: Bool)
    /// `info`: describe the regular file at `path` (relative to the mount's root): file id, key
    /// version, whether its key is cached, size on disk; changes nothing and loads no key.
    case info(path: String)
    /// `metrics`: the mount's counters in Prometheus' text format; changes nothing.
    case metrics

    /// The op's name on the wire ("flush-key"), for logs.
    public var op: String {
        switch self {
        case .stats: "stats"
        case .flush: "flush"
        case .flushKey: "flush-key"
        case .relabel: "relabel"
        case .rekey: "rekey"
        case .audit: "audit"
        case .info: "info"
        case .metrics: "metrics"
        }
    }
}

/// The record an `audit` request asks the mount to append; the mount adds the caller's uid,
/// gid, pid and process name from SO_PEERCRED.
public struct ControlAuditRecord: Sendable, Equatable {
    /// The audit event name (`revoke`, `rotate`, …).
    public var event: String
    /// `ok`, `denied` or `error`.
    public var result: String
    public var error: String?
    /// 32 hex digits.
    public var fileID: String?
    public var path: String?
    public var keyID: String?
    public var keyVersion: Int?
    /// The record's `detail` (`reason` on the wire).
    public var detail: String?

    public init(event: String, result: String = "ok", error: String? = nil, fileID: String? = nil, path: String? = nil,
                keyID: String? = nil, keyVersion: Int? = nil, detail: String? = nil) {
        self.event = event
        self.result = result
        self.error = error
        self.fileID = fileID
        self.path = path
        self.keyID = keyID
        self.keyVersion = keyVersion
        self.detail = detail
    }
}

/// A request line that is JSON but not a request this mount serves; `message` is the answer's
/// `error` (docs/control-protocol.md).
public struct ControlRequestError: Error, Equatable, CustomStringConvertible {
    public let message: String
    public var description: String { message }
}

extension ControlRequest: Codable {
    /// The wire object: `op` and the optional members every op draws from.
    struct Wire: Codable {
        var op: String
        var keyID: String?
        var version: Int?
        var reason: String?
        var event: String?
        var result: String?
        var error: String?
        var fileID: String?
        var path: String?
        var durable: Bool?

        enum CodingKeys: String, CodingKey {
            case op, keyID = "key_id", version, reason, event, result, error, fileID = "file_id", path, durable
        }
    }

    public init(from decoder: any Decoder) throws {
        self = try Self(wire: try Wire(from: decoder))
    }

    init(wire w: Wire) throws(ControlRequestError) {
        switch w.op {
        case "stats":
            self = .stats
        case "flush":
            self = .flush(reason: w.reason)
        case "flush-key":
            guard let keyID = w.keyID else { throw ControlRequestError(message: "flush-key needs key_id") }
            self = .flushKey(keyID: keyID, version: w.version, reason: w.reason)
        case "relabel":
            self = .relabel
        case "rekey":
            guard let path = w.path else { throw ControlRequestError(message: "rekey needs path") }
            self = .rekey(path: path)
        case "audit":
            guard let event = w.event else { throw ControlRequestError(message: "audit needs event") }
            self = .audit(ControlAuditRecord(event: event, result: w.result ?? "ok", error: w.error, fileID: w.fileID, path: w.path,
                                             keyID: w.keyID, keyVersion: w.version, detail: w.reason),
                          durable: w.durable ?? true)
        case "info":
            guard let path = w.path else { throw ControlRequestError(message: "info needs path") }
            self = .info(path: path)
        case "metrics":
            self = .metrics
        default:
            throw ControlRequestError(message: "unknown op '\(w.op)'")
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var w = Wire(op: op)
        switch self {
        case .stats, .relabel, .metrics:
            break
        case .flush(let reason):
            w.reason = reason
        case .flushKey(let keyID, let version, let reason):
            (w.keyID, w.version, w.reason) = (keyID, version, reason)
        case .rekey(let path), .info(let path):
            w.path = path
        case .audit(let r, let durable):
            (w.event, w.result, w.error, w.fileID, w.path) = (r.event, r.result, r.error, r.fileID, r.path)
            (w.keyID, w.version, w.reason, w.durable) = (r.keyID, r.keyVersion, r.detail, durable)
        }
        try w.encode(to: encoder)
    }
}
