/// A sink that keeps the local log as the authority and hands a copy of each record, as
/// logged, to other places (`AuditCopy`: journald or syslog) — `cmkfs mount --audit-syslog`.
///
/// The local log decides: `append` returns or throws exactly as the log does (a key is used
/// only after its record is in the local log). A copy never blocks or fails the caller: `offer`
/// only queues, and what a copy cannot take or send it counts as dropped; the drops are then
/// themselves recorded in the local log (`audit-copy-dropped`), so the log says which records
/// the remote side may lack.
public final class AuditFanOut: AuditSink {
    public let local: AuditLog
    public let copies: [AuditCopy]

    public init(local: AuditLog, copies: [AuditCopy]) {
        self.local = local
        self.copies = copies
        for copy in copies {
            copy.start { [weak self] event in
                // From the copy's own thread, never from a caller of `append`.
                guard let self else { return }
                try? self.append(event)
            }
        }
    }

    public func append(_ event: AuditEvent, durable: Bool) throws(AuditError) {
        let line = try local.appendLine(event, durable: durable)
        for copy in copies { copy.offer(line) }
    }

    public func sync() throws(AuditError) { try local.sync() }

    /// Sends what the copies hold (each within its deadline), records their unreported drops
    /// in the local log, then closes it.
    public func close() throws(AuditError) {
        for copy in copies {
            if let dropped = copy.finish() { try? local.append(dropped, durable: false) }
        }
        try local.close()
    }
}
