import Foundation
import CMKAudit
import CMKControl
import CMKCrypto
import CMKKeyService
import CMKVolume

/// Where an admin command's audit records go. While the volume is mounted the mount owns the
/// log, so records travel over its control socket; otherwise the command opens the log itself
/// (and holds it until `close`). If the mount dies during a long command, the next record finds
/// the volume unmounted and goes to the log directly.
final class CommandAudit {
    private let path: String
    private let openLog: () throws(CMKError) -> CommandAuditLog
    /// Never route through a mount: this command holds the mount lock itself (offline rekey).
    private let direct: Bool
    private var log: CommandAuditLog?

    /// `key`: the audit key, when the caller already unwrapped it.
    convenience init(_ admin: KeyAdmin, key: SecretBytes? = nil) {
        self.init(path: admin.path) { () throws(CMKError) in
            let auditKey: SecretBytes
            if let key { auditKey = key } else { auditKey = try admin.auditKey() }
            return try admin.openAuditLog(key: auditKey)
        }
    }

    init(path: String, direct: Bool = false, openLog: @escaping () throws(CMKError) -> CommandAuditLog) {
        self.path = path
        self.direct = direct
        self.openLog = openLog
    }

    func record(_ event: AuditEvent, durable: Bool) throws(CMKError) {
        if log == nil && !direct && MountLock.holder(volumePath: path) != nil {
            let request = ControlRequest.audit(ControlAuditRecord(event: event.event, result: event.result, error: event.error,
                                                                  fileID: event.fileID, path: event.path, keyID: event.keyID,
                                                                  keyVersion: event.keyVersion, detail: event.detail),
                                               durable: durable)
            do {
                _ = try ControlClient.send(request, volume: path)
                return
            } catch {
                // Only a mount that went away is a reason to write the record ourselves.
                guard MountLock.holder(volumePath: path) == nil else { throw error }
            }
        }
        if log == nil { log = try openLog() }
        try log!.append(event, durable: durable)
    }

    /// Opens the log now (a command on an unmounted volume), so a key provider that goes away
    /// later cannot keep the command's records, or its final one, from being written.
    func openNow() throws(CMKError) {
        if log == nil { log = try openLog() }
    }

    /// The sink the CMKVolume operations take.
    var sink: AuditRecorder { { (event, durable) throws(CMKError) in try self.record(event, durable: durable) } }

    func close() throws(CMKError) {
        defer { log = nil }
        try log?.close()
    }
}

/// Prints `value` as one pretty JSON object on stdout (stable, sorted keys).
func printJSON<T: Encodable>(_ value: T) {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    print(String(decoding: (try? encoder.encode(value)) ?? Data(), as: UTF8.self))
}
