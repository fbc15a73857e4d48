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
    /// stats: the FUSE transport.
    public var transport: ControlTransport?

    public init(ok: Bool, error: String? = nil) {
        self.ok = ok
        self.error = error
    }

    enum CodingKeys: String, CodingKey {
        case ok, error, flushed, openFilesCut = "open_files_cut", elapsedMilliseconds = "elapsed_ms", stats
        case openFiles = "open_files", errno, info, metrics, transport
    }
}

/// `stats`: how the kernel's requests reach the mount (docs/design-notes.md, "The FUSE transport").
public struct ControlTransport: Codable, Sendable, Equatable {
    /// What the mount was asked for (`dev-fuse`, `io_uring`, `auto`) and what serves now.
    public var requested: String
    public var active: String
    /// Requests served through the rings and through /dev/fuse since the mount started.
    public var ringRequests: UInt64
    public var deviceRequests: UInt64
    /// Threads with a ring entry registered now.
    public var ringThreads: Int
    /// Why io_uring is not in use although it was asked for.
    public var fallback: String?

    public init(requested: String, active: String, ringRequests: UInt64, deviceRequests: UInt64, ringThreads: Int, fallback: String?) {
        self.requested = requested
        self.active = active
        self.ringRequests = ringRequests
        self.deviceRequests = deviceRequests
        self.ringThreads = ringThreads
        self.fallback = fallback
    }

    enum CodingKeys: String, CodingKey {
        case requested, active, ringRequests = "ring_requests", deviceRequests = "device_requests", ringThreads = "ring_threads", fallback
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
