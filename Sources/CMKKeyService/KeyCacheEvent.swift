import CMKKeys

/// Something the key cache did on its own (not at a caller's request) that the mount logs and
/// audits. The audit event name and the log level come from the case, never from the message
/// text, so rewording a message cannot rename an event in the tamper-evident log.
public enum KeyCacheEvent: Sendable, Equatable {
    /// `count` live data keys were dropped (the kill switch, or the provider refused a key).
    case flushed(count: Int, reason: String)
    /// After a rotation, `count` cached keys moved to the master-key version now wrapping them.
    case relabelled(count: Int, active: KeyRef)
    /// The data key of `fileID` passed the end of its lease without being renewed.
    case expired(fileID: [UInt8], key: KeyRef)
    /// The provider confirmed `key` enabled; `leases` leases were extended.
    case renewed(key: KeyRef, leases: Int)
    /// The provider could not be asked about `key` (`error` says why); cached keys serve until
    /// their leases end.
    case renewFailed(key: KeyRef, error: String)

    /// How much a log reader should care.
    public enum Severity: Sendable, Equatable {
        /// Routine, frequent (every renewal tick).
        case debug
        /// Worth a line in the log.
        case info
        /// The provider is not answering: the mount will lose its keys if this lasts.
        case warning
    }

    /// The `event` field of the audit record (docs/audit-format.md); fixed per case.
    public var auditName: String {
        switch self {
        case .flushed: "flush"
        case .relabelled: "relabel"
        case .expired: "expire"
        case .renewed: "renew"
        case .renewFailed: "renew-failed"
        }
    }

    /// The `result` field of the audit record.
    public var auditResult: String {
        if case .renewFailed = self { return "error" }
        return "ok"
    }

    public var severity: Severity {
        switch self {
        case .renewed: .debug
        case .renewFailed: .warning
        case .flushed, .relabelled, .expired: .info
        }
    }

    /// The human-readable line for the log and the audit record's `detail`.
    public var message: String {
        switch self {
        case .flushed(let count, let reason):
            "flush: \(count) data keys dropped (\(reason))"
        case .relabelled(let count, let active):
            "relabel: \(count) cached data keys now under the version that wraps them (\(active) active)"
        case .expired(let fileID, let key):
            "expire: data key of file \(hexString(fileID)) passed its lease (\(key))"
        case .renewed(let key, let leases):
            "renew: \(key) enabled; \(leases) leases extended"
        case .renewFailed(let key, let error):
            "renew failed: \(key): \(error); cached keys serve until their lease ends"
        }
    }
}
