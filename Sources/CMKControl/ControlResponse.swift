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
    /// info: the file asked about.
    public var info: ControlFileInfo?
    /// metrics: the mount's counters in Prometheus' text exposition format.
    public var metrics: String?

    public init(ok: Bool, error: String? = nil) {
        self.ok = ok
        self.error = error
    }

    enum CodingKeys: String, CodingKey {
        case ok, error, flushed, openFilesCut = "open_files_cut", elapsedMilliseconds = "elapsed_ms", stats
        case openFiles = "open_files", errno, info, metrics
    }
}

/// `info`: one file as the mount knows it (`cmkfs info`).
public struct ControlFileInfo: Codable, Sendable, Equatable {
    /// 32 hex digits.
    public var fileID: String
    /// The master key wrapping the file's data key, and its version (nil without a key row).
    public var keyID: String?
    public var keyVersion: Int?
    /// Whether the file's data key is in the mount's key cache now.
    public var keyCached: Bool
    /// The backing file's length (header, blocks and tags) and what it occupies on disk.
    public var backingBytes: Int
    public var diskBytes: Int

    public init(fileID: String, keyID: String? = nil, keyVersion: Int? = nil, backingBytes: Int, diskBytes: Int, keyCached: Bool) {
        self.fileID = fileID
        self.keyID = keyID
        self.keyVersion = keyVersion
        self.keyCached = keyCached
        self.backingBytes = backingBytes
        self.diskBytes = diskBytes
    }

    enum CodingKeys: String, CodingKey {
        case fileID = "file_id", keyID = "key_id", keyVersion = "key_version", keyCached = "key_cached"
        case backingBytes = "backing_bytes", diskBytes = "disk_bytes"
    }
}
