import Foundation
import Glibc
import CMKCrypto
import CMKSystem

/// Denials that happen before anyone can write the audit log: a wrong PIN, a disabled or
/// destroyed master key, an unreachable provider at mount. The log's records are MACed with the
/// audit key, which is unwrapped by that very provider, so these cannot be chained when they
/// happen. They are kept in `audit/denials.pending` and chained into the log, in order and with
/// their original time, by the next process that opens the log (`ingest`).
///
/// Only lines cmkfs wrote may enter the chain: each line is `JSON ‖ TAB ‖ hex HMAC-SHA256(denial
/// key, JSON)`, where the denial key is a random per-volume key kept on the host, outside the
/// volume (docs/audit-format.md): it needs no master key, and whoever holds only the volume
/// (its storage, a backup) cannot forge a line. Lines without a valid MAC are not chained: one
/// `pending-denials-rejected` record counts them and they are kept in `denials.rejected`.
public enum PendingDenials {
    public static let fileName = "denials.pending"
    public static let rejectedFileName = "denials.rejected"
    public static let rejectedEvent = "pending-denials-rejected"

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
        /// The caller's login uid and user names, as every record by a command carries them
        /// (`AuditEvent.loginUID`); absent from lines an older cmkfs wrote.
        var loginUID: UInt32?
        var user: String?
        var loginUser: String?
        enum CodingKeys: String, CodingKey {
            case time, event, result, error, uid, gid, pid, process, keyID = "key_id", detail
            case loginUID = "login_uid", user, loginUser = "login_user"
        }
    }

    /// Appends `event` (its time is now), MACed under `key`, to the pending file of the log in
    /// `directory`, if that directory exists (a volume's audit dir). Best effort: a denial must
    /// not fail differently because it could not be noted; returns whether it was.
    @discardableResult
    public static func record(_ event: AuditEvent, directory: String, key: SecretBytes) -> Bool {
        guard let st = try? Descriptor.cwd.stat(directory), (st.st_mode & S_IFMT) == S_IFDIR else { return false }
        let entry = Entry(time: AuditRecord.now(), event: event.event, result: event.result, error: event.error,
                          uid: event.uid, gid: event.gid, pid: event.pid, process: event.process, keyID: event.keyID,
                          detail: event.detail, loginUID: event.loginUID, user: event.user, loginUser: event.loginUser)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        guard let json = try? encoder.encode(entry), let mac = try? HMACSHA256.mac(key: key, [UInt8](json)) else { return false }
        let line = [UInt8](json) + [0x09] + Array(hexString(mac).utf8) + [0x0A]
        guard let file = try? FileDescriptor.open(directory + "/" + fileName, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, mode: 0o600)
        else { return false }
        return (try? file.descriptor.writeAll(line)) != nil
    }

    /// The entry of a pending line if its MAC verifies under `key`, else nil.
    static func authenticated(_ line: ArraySlice<UInt8>, key: SecretBytes?) -> Entry? {
        guard let key, let tab = line.lastIndex(of: 0x09) else { return nil }
        let json = Array(line[line.startIndex..<tab])
        guard let mac = bytesFromHex(String(decoding: line[(tab + 1)...], as: UTF8.self)), mac.count == HMACSHA256.size,
              let expected = try? HMACSHA256.mac(key: key, json), HMACSHA256.equal(expected, mac) else { return nil }
        return try? JSONDecoder().decode(Entry.self, from: Data(json))
    }

    /// Chains every authenticated pending denial into `log` (durably) and removes the pending
    /// file. `key` is the volume's denial key on this host (nil: none here, so no line can be
    /// authenticated). Lines that do not verify (forged, edited, torn, from another host) are
    /// not chained: they go to `denials.rejected` and one record says how many. Returns how
    /// many were chained.
    @discardableResult
    public static func ingest(into log: AuditLog, directory: String, key: SecretBytes?) throws(AuditError) -> Int {
        let path = directory + "/" + fileName
        guard let data = FileManager.default.contents(atPath: path), !data.isEmpty else {
            try? Descriptor.cwd.unlink(path)
            return 0
        }
        var count = 0
        var rejected: [ArraySlice<UInt8>] = []
        let bytes = [UInt8](data)
        for line in bytes.split(separator: 0x0A) where !line.isEmpty {
            guard let e = authenticated(line, key: key) else {
                rejected.append(line)
                continue
            }
            try log.append(AuditEvent(e.event, result: e.result, error: e.error, keyID: e.keyID, uid: e.uid, gid: e.gid,
                                      pid: e.pid, process: e.process,
                                      detail: "happened at \(e.time), before the audit key could be unwrapped; chained late" + (e.detail.map { ": \($0)" } ?? ""),
                                      loginUID: e.loginUID, user: e.user, loginUser: e.loginUser))
            count += 1
        }
        if !rejected.isEmpty {
            if let file = try? FileDescriptor.open(directory + "/" + rejectedFileName, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, mode: 0o600) {
                for line in rejected { _ = AuditLog.writeAll(file.descriptor, Array(line) + [0x0A]) }
            }
            let why = key == nil ? "this host has no denial key for the volume" : "they carry no valid MAC under this host's denial key"
            try log.append(AuditEvent(rejectedEvent, result: "error",
                                      detail: "\(rejected.count) line(s) of \(fileName) were not chained: \(why) (forged or edited "
                                      + "in the volume, torn, written on another host or by an older cmkfs); kept in audit/\(rejectedFileName)"))
        }
        try log.sync()
        try? Descriptor.cwd.unlink(path)
        return count
    }
}
