import CMKCrypto

/// Where checkpoints live, apart from the log (the volume keeps them in `meta.db`).
public protocol AuditCheckpointStore: Sendable {
    func loadCheckpoint() throws -> [UInt8]?
    func saveCheckpoint(_ bytes: [UInt8]) throws
    /// Called by the group-commit thread at every interval, holding none of the log's locks:
    /// the store's own upkeep (the volume's: meta.db's checkpoints), kept off request threads.
    func groupCommitTick() throws
}

extension AuditCheckpointStore {
    public func groupCommitTick() throws {}
}

/// "The log held `count` records and record `count` had MAC `head`", MACed with the audit key:
///
///     cmkfs-audit-checkpoint v1 seq=<count> head=<64 hex> time=<UTC> mac=<64 hex>
///
/// where `mac` = HMAC-SHA256(audit key, everything before ` mac=`). A log cut below `count`, or
/// replaced by an older copy, no longer reaches it.
public struct AuditCheckpoint: Sendable, Equatable {
    public let count: UInt64
    public let head: String
    public let time: String

    public init(count: UInt64, head: String, time: String) {
        self.count = count
        self.head = head
        self.time = time
    }

    var body: String { "cmkfs-audit-checkpoint v1 seq=\(count) head=\(head) time=\(time)" }

    public func encoded(key: SecretBytes) throws(CryptoError) -> [UInt8] {
        let mac = hexString(try HMACSHA256.mac(key: key, Array(body.utf8)))
        return Array((body + " mac=" + mac).utf8)
    }

    /// Parses and authenticates a stored checkpoint: nil fields mean "malformed", a wrong MAC
    /// throws `.malformed` with the reason.
    public static func decode(_ bytes: [UInt8], key: SecretBytes) throws(AuditError) -> AuditCheckpoint {
        let text = String(decoding: bytes, as: UTF8.self)
        let words = text.split(separator: " ").map(String.init)
        func value(_ name: String) -> String? {
            words.first { $0.hasPrefix(name + "=") }.map { String($0.dropFirst(name.count + 1)) }
        }
        guard words.count == 6, words[0] == "cmkfs-audit-checkpoint", words[1] == "v1",
              let count = value("seq").flatMap(UInt64.init), let head = value("head"), let time = value("time"),
              let mac = value("mac").flatMap(bytesFromHex) else {
            throw AuditError(.malformed, "the audit checkpoint in meta.db is not in the documented format")
        }
        let cp = AuditCheckpoint(count: count, head: head, time: time)
        let expected: [UInt8]
        do { expected = try HMACSHA256.mac(key: key, Array(cp.body.utf8)) } catch {
            throw AuditError(.key, "cannot compute the checkpoint's MAC: \(error)")
        }
        guard HMACSHA256.equal(expected, mac) else {
            throw AuditError(.malformed, "the audit checkpoint in meta.db does not verify under the audit key (altered)")
        }
        return cp
    }
}
