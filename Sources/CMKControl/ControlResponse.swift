import CMKKeyService

/// The mount's answer to one `ControlRequest`: one JSON object on one line
/// (docs/control-protocol.md). Which fields are set depends on the request.
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
