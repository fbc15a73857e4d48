import Foundation
import CMKHTTP
import CMKKeys

/// The volume's audit anchor (the head of its audit log, kept outside the volume: docs/audit-format.md)
/// in a KV version 2 secrets engine of the same Vault, when the volume names one
/// (`--vault-kv-mount`): `<kv>/data/cmkfs/audit-anchor/<volume id>`, one small secret per volume,
/// written with check-and-set so two writers cannot both win and a lower seq is refused.
///
/// Transit itself keeps nothing but keys, and a cubbyhole belongs to one token (a periodic
/// token's replacement would find it empty), so KV v2 is where Vault can hold it.
extension VaultTransitProvider {
    /// The anchor's KV v2 path below the mount's `data/` (or `metadata/`).
    static func anchorPath(_ volumeID: [UInt8]) -> String { "cmkfs/audit-anchor/\(hexString(volumeID))" }

    public func anchorPlace(volumeID: [UInt8]) -> String? {
        settings.kvMount.map { "Vault KV \($0)/\(Self.anchorPath(volumeID)) at \(settings.address)" }
    }

    public func auditAnchor(volumeID: [UInt8]) throws(KeyProviderError) -> [UInt8]? {
        try storedAnchor(volumeID)?.record.anchor
    }

    /// Stores the anchor of record `seq`, refusing to go back to a lower seq than Vault holds.
    /// A check-and-set conflict (another writer between the read and the write) reads again.
    public func setAuditAnchor(_ anchor: [UInt8], seq: UInt64, volumeID: [UInt8]) throws(KeyProviderError) {
        guard let kv = settings.kvMount else { return }
        for _ in 0..<5 {
            let stored = try storedAnchor(volumeID)
            if let stored, stored.record.seq > seq {
                throw .unavailable("\(place): refusing to move the audit anchor \(kv)/\(Self.anchorPath(volumeID)) back from seq \(stored.record.seq) to \(seq) (a rollback)")
            }
            let body = VaultClient.json(["options": ["cas": stored?.version ?? 0],
                                         "data": ["anchor": Base64.encode(AnchorRecord.encode(anchor, seq: seq))]])
            let answer = try anchorCall(.post, kv, "data/" + Self.anchorPath(volumeID), body: body, volumeID: volumeID)
            if (200..<300).contains(answer.status) { return }
            if answer.status == 400, answer.errors.contains("check-and-set") { continue }
            throw anchorRefusal(answer, kv: kv, doing: "write")
        }
        throw .unavailable("\(place): the audit anchor \(kv)/\(Self.anchorPath(volumeID)) kept changing under this writer (check-and-set)")
    }

    /// The stored record and its KV version, nil when there is none (or no KV mount is named).
    private func storedAnchor(_ volumeID: [UInt8]) throws(KeyProviderError) -> (record: (seq: UInt64, anchor: [UInt8]), version: Int)? {
        guard let kv = settings.kvMount else { return nil }
        let answer = try anchorCall(.get, kv, "data/" + Self.anchorPath(volumeID), volumeID: volumeID)
        if answer.status == 404 { return nil }
        guard answer.status == 200 else { throw anchorRefusal(answer, kv: kv, doing: "read") }
        guard let data = answer.data, let fields = data["data"] as? [String: Any], let text = fields["anchor"] as? String,
              let bytes = Data(base64Encoded: text), let record = AnchorRecord.decode([UInt8](bytes)),
              let version = (data["metadata"] as? [String: Any])?["version"] as? Int else {
            throw .corrupt("\(place): \(kv)/\(Self.anchorPath(volumeID)) is not a cmkfs audit anchor")
        }
        return (record, version)
    }

    private func anchorCall(_ method: HTTPMethod, _ kv: String, _ path: String, body: HTTPBody? = nil,
                            volumeID: [UInt8]) throws(KeyProviderError) -> VaultAnswer {
        try call(method, path, body: body, key: KeyRef(keyID: keyName, version: 0), op: "audit-anchor",
                 context: WrapContext(volumeID: volumeID, fileID: []), mount: kv)
    }

    private func anchorRefusal(_ answer: VaultAnswer, kv: String, doing: String) -> KeyProviderError {
        let key = KeyRef(keyID: keyName, version: 0)
        if answer.status == 403 {
            return .accessDenied(key, detail: "\(place) refused the token to \(doing) the audit anchor in \(kv)/ (\(answer.errors)): "
                                 + "its policy must allow create, read and update on \(kv)/data/cmkfs/audit-anchor/*")
        }
        return .unavailable("\(place) refused to \(doing) the audit anchor in \(kv)/: \(answer.errors)")
    }
}
