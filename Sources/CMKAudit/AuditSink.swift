/// Where a volume's audit records go. The local tamper-evident log (`AuditLog`) is the first
/// implementation; a sink that ships records off the host (syslog, a remote collector) conforms
/// to the same protocol, passes `AuditSinkContractTests` (add a case to `ContractSink`), and is
/// then usable wherever the mount and the CLI take `any AuditSink`. Several sinks at once would be
/// a sink that fans out to others, failing when the one the volume relies on fails.
///
/// The rule the FUSE layer builds on: a key is used only after its record was accepted. `append`
/// returns only once the record is recorded (the local log: written with one `write(2)`, so it
/// survives a crash of the process); when it throws, the caller refuses the operation with the
/// error's errno (fail closed).
public protocol AuditSink: AnyObject, Sendable {
    /// Records `event` before returning. With `durable`, also makes it (and every record before
    /// it) survive a power cut before returning: key-lifecycle events use it.
    func append(_ event: AuditEvent, durable: Bool) throws(AuditError)
    /// Makes every record appended so far survive a power cut (the control socket's `sync`).
    func sync() throws(AuditError)
    /// Syncs and releases the sink; every later `append` throws.
    func close() throws(AuditError)
}

extension AuditSink {
    /// Records `event` before returning (not yet durable against a power cut).
    public func append(_ event: AuditEvent) throws(AuditError) {
        try append(event, durable: false)
    }
}

extension AuditLog: AuditSink {}
