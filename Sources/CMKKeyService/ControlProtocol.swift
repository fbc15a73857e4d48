/// The live mount's control socket (`VOLUME/control.sock`, mode 0600; only root or the owner of
/// the volume directory may connect, checked with SO_PEERCRED). One JSON object per line each
/// way, one request per connection. Documented in docs/control-protocol.md.
public struct ControlRequest: Codable, Sendable {
    /// "stats", "flush" (every cached DEK), or "flush-key" (the DEKs under `key_id`, one
    /// `version` or all).
    public var op: String
    public var keyID: String?
    public var version: Int?
    public var reason: String?
    /// "audit": the record the mount writes for a command (`revoke`, `enable`, `rotate`, …),
    /// with its result, error, file id and path when the command gives them.
    public var event: String?
    public var result: String?
    public var error: String?
    public var fileID: String?
    public var path: String?
    /// "audit": fsync before answering (default true).
    public var durable: Bool?

    public init(op: String, keyID: String? = nil, version: Int? = nil, reason: String? = nil, event: String? = nil) {
        self.event = event
        self.op = op
        self.keyID = keyID
        self.version = version
        self.reason = reason
    }

    enum CodingKeys: String, CodingKey {
        case op, keyID = "key_id", version, reason, event, result, error, fileID = "file_id", path, durable
    }
}

public struct ControlResponse: Codable, Sendable {
    public var ok: Bool
    public var error: String?
    /// flush: DEKs dropped, open files cut off, and the time from request to flushed cache.
    public var flushed: Int?
    public var openFilesCut: Int?
    public var elapsedMilliseconds: Double?
    public var stats: CacheStats?
    public var openFiles: Int?
    /// rekey: the errno of a failure (EACCES: key refused, EIO: tampered block, …).
    public var errno: Int32?

    public init(ok: Bool, error: String? = nil) {
        self.ok = ok
        self.error = error
    }

    enum CodingKeys: String, CodingKey {
        case ok, error, flushed, openFilesCut = "open_files_cut", elapsedMilliseconds = "elapsed_ms", stats
        case openFiles = "open_files", errno
    }
}
