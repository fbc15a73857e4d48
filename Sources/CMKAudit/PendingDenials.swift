import Foundation
import Glibc

/// Denials that happen before anyone can write the audit log: a wrong PIN, a disabled or
/// destroyed master key, an unreachable provider at mount. The log's records are MACed with the
/// audit key, which is unwrapped by that very provider, so these cannot be chained when they
/// happen. They are kept in `audit/denials.pending` (one JSON object a line, mode 0600, appended
/// with O_APPEND) and chained into the log, in order and with their original time, by the next
/// process that opens the log (`ingest`). Until then they are unauthenticated: someone who can
/// write the audit directory can delete them (docs/audit-format.md says so).
public enum PendingDenials {
    public static let fileName = "denials.pending"

    struct Entry: Codable {
        var time: String
        var event: String
        var result: String
        var error: String?
        var uid: Int?
        var gid: Int?
        var pid: Int?
        var process: String?
        var keyID: String?
        var detail: String?
        enum CodingKeys: String, CodingKey { case time, event, result, error, uid, gid, pid, process, keyID = "key_id", detail }
    }

    /// Appends `event` (its time is now) to the pending file of the log in `directory`, if that
    /// directory exists (a volume's audit dir). Best effort: a denial must not fail differently
    /// because it could not be noted; returns whether it was.
    @discardableResult
    public static func record(_ event: AuditEvent, directory: String) -> Bool {
        var st = stat()
        guard stat(directory, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR else { return false }
        let entry = Entry(time: AuditRecord.now(), event: event.event, result: event.result, error: event.error,
                          uid: event.uid, gid: event.gid, pid: event.pid, process: event.process, keyID: event.keyID,
                          detail: event.detail)
        guard var line = try? JSONEncoder().encode(entry) else { return false }
        line.append(0x0A)
        let fd = open(directory + "/" + fileName, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        let written = line.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        return written == line.count
    }

    /// Chains every pending denial into `log` (durably) and removes the pending file. Lines that
    /// are not valid entries (torn, edited) are chained too, as `pending-denial-unreadable`, so
    /// nothing disappears silently. Returns how many were chained.
    @discardableResult
    public static func ingest(into log: AuditLog, directory: String) throws(AuditError) -> Int {
        let path = directory + "/" + fileName
        guard let data = FileManager.default.contents(atPath: path), !data.isEmpty else {
            unlink(path)
            return 0
        }
        var count = 0
        for line in data.split(separator: 0x0A) where !line.isEmpty {
            var event: AuditEvent
            if let e = try? JSONDecoder().decode(Entry.self, from: Data(line)) {
                event = AuditEvent(e.event, result: e.result, error: e.error, keyID: e.keyID, uid: e.uid, gid: e.gid,
                                   pid: e.pid, process: e.process,
                                   detail: "happened at \(e.time), before the audit key could be unwrapped; chained late" + (e.detail.map { ": \($0)" } ?? ""))
            } else {
                event = AuditEvent("pending-denial-unreadable", result: "error",
                                   detail: "a line of \(fileName) is not a denial record (\(line.count) bytes)")
            }
            try log.append(event)
            count += 1
        }
        try log.sync()
        unlink(path)
        return count
    }
}
