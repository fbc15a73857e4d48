/// What happened, as the caller knows it. The writer adds the sequence number, the time, the
/// volume id, the host and the chain fields (`prev`, `mac`) — see docs/audit-format.md.
public struct AuditEvent: Sendable, Equatable {
    /// `init`, `mount`, `unmount`, `open`, `create`, `truncate`, `read-denied`, `revoke`, `enable`,
    /// `flush`, `renew`, `expire`, `renew-failed`, `mount-denied`, … (docs/audit-format.md lists them).
    public var event: String
    /// `ok`, `denied` (the key owner refused: disabled/destroyed key, wrong PIN), or `error`
    /// (provider down, tampered block, I/O).
    public var result: String
    public var errno: Int32?
    /// The provider's or the content layer's message (never key material).
    public var error: String?
    /// The file id (32 hex digits) and the path inside the mount at that moment.
    public var fileID: String?
    public var path: String?
    public var keyID: String?
    public var keyVersion: Int?
    /// For a DEK use: `hit` (served from the mount's cache), `miss` (unwrapped by the provider
    /// for this open) or `new` (generated and wrapped for a new file).
    public var cache: String?
    /// The caller as FUSE reports it, and `/proc/PID/comm`.
    public var uid: Int?
    public var gid: Int?
    public var pid: Int?
    public var process: String?
    public var detail: String?
    /// The id of the key-provider request this key use made (`KeyRequest.id`), which the KMS's own
    /// log records too: the two logs join on it. Only on records of a use that called the
    /// provider; a batch (rotation) records the batch's id, whose requests are `ID.N`.
    public var kmsRequest: String?
    /// The provider server's own id for that request, when it gives one (an HTTP KMS).
    public var kmsServerRequest: String?
    /// The caller's login uid (`/proc/PID/loginuid`): the uid its session logged in as, kept
    /// across `sudo` and `su`, so two admins acting as root are told apart. 4294967295 is the
    /// kernel's "unset" (a daemon started outside a login session).
    public var loginUID: UInt32?
    /// The names of `uid` and `loginUID` in the host's user database (getpwuid_r), when they have one.
    public var user: String?
    public var loginUser: String?

    public init(_ event: String, result: String = "ok", errno: Int32? = nil, error: String? = nil,
                fileID: String? = nil, path: String? = nil, keyID: String? = nil, keyVersion: Int? = nil,
                cache: String? = nil, uid: Int? = nil, gid: Int? = nil, pid: Int? = nil, process: String? = nil,
                detail: String? = nil, kmsRequest: String? = nil, kmsServerRequest: String? = nil,
                loginUID: UInt32? = nil, user: String? = nil, loginUser: String? = nil) {
        self.event = event
        self.result = result
        self.errno = errno
        self.error = error
        self.fileID = fileID
        self.path = path
        self.keyID = keyID
        self.keyVersion = keyVersion
        self.cache = cache
        self.uid = uid
        self.gid = gid
        self.pid = pid
        self.process = process
        self.detail = detail
        self.kmsRequest = kmsRequest
        self.kmsServerRequest = kmsServerRequest
        self.loginUID = loginUID
        self.user = user
        self.loginUser = loginUser
    }

    /// `loginuid`'s value for "never set" (`(uid_t)-1`).
    public static let unsetLoginUID = UInt32.max
}

extension AuditEvent {
    /// Every `event` a cmkfs writer puts in a record (docs/audit-format.md, "Events"), so
    /// `audit show --event` can refuse a name no record can carry instead of printing nothing.
    public static let names: [String] = [
        "open", "create", "truncate", "xattr", "read-denied", "write-denied", "rekey", "rekey-run",
        "flush", "renew", "relabel", "renew-failed", "expire",
        "init", "mount", "unmount", "revoke", "enable", "fsck", "name-key", "bind-names",
        "rotate", "rotate-batch", "purge", "purge-unreadable",
        "mount-denied", "key-command-denied", PendingDenials.rejectedEvent, AuditGap.event, syncEvent, AuditCopy.droppedEvent,
    ]

    /// A command's request that the mount make its log durable now (a control `audit` request
    /// with `durable`; the test harness sends it before it copies a volume): no key is used.
    public static let syncEvent = "audit-sync"

    /// The `result`s a record can carry.
    public static let results = ["ok", "denied", "error"]

    /// Why a record named `event` with `result` cannot be chained (an unknown name), or nil:
    /// the control socket's `audit` request is checked with it, as `audit show --event` is.
    public static func refusal(event: String, result: String) -> String? {
        guard names.contains(event) else {
            return "unknown audit event '\(event)'; valid events: " + names.joined(separator: ", ")
        }
        guard results.contains(result) else {
            return "unknown audit result '\(result)'; valid results: " + results.joined(separator: ", ")
        }
        return nil
    }
}
