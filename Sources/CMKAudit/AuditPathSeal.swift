import Foundation
import CMKCrypto

/// The `path` field of a version-2 record: the path inside the mount sealed with AES-256-GCM under
/// the **path key**, HMAC-SHA256(audit key, "cmkfs.audit.path.v2"), as base64 of
/// `nonce (12) ‖ ciphertext ‖ tag (16)` (docs/audit-format.md). A copy of the volume shows no
/// name; the record's MAC covers the sealed bytes, so `audit verify` never needs to open them;
/// `audit show`/`export` open them with the audit key. A random nonce per record: equal paths do
/// not look equal.
public struct AuditPathSeal: Sendable {
    let key: SecretBytes
    /// Contexts for the path key alone, reused across records (built per record, a context
    /// and its cipher setup were most of a path's sealing cost).
    let contexts = AESGCM.Pool()
    static let label = Array("cmkfs.audit.path.v2".utf8)
    static let aad = Array("cmkfs.audit.path".utf8)

    /// The path key of `auditKey`.
    public init(auditKey: SecretBytes) throws(CryptoError) {
        var derived = try HMACSHA256.mac(key: auditKey, Self.label)
        key = derived.withUnsafeBytes { SecretBytes(copying: $0) }
        for i in derived.indices { derived[i] = 0 }
    }

    /// `path` sealed, as the field's text.
    public func seal(_ path: String) throws(CryptoError) -> String {
        let plain = Array(path.utf8)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(plain.count, 1), alignment: 16)
        defer { buffer.deallocate() }
        buffer.copyBytes(from: plain)
        let p = UnsafeRawBufferPointer(rebasing: buffer[0..<plain.count])
        let sealed = try contexts.with { gcm throws(CryptoError) in
            try key.withUnsafeBytes { k throws(CryptoError) in try gcm.sealRecord(key: k, aad: Self.aad, plaintext: p) }
        }
        return Data(sealed).base64EncodedString()
    }

    /// The path a sealed field holds, or nil when it does not open under this key.
    public func open(_ field: String) -> String? {
        guard let data = Data(base64Encoded: field) else { return nil }
        let opened = try? contexts.with { gcm throws(CryptoError) in
            try key.withUnsafeBytes { k throws(CryptoError) in try gcm.openRecord(key: k, aad: Self.aad, record: [UInt8](data)) }
        }
        return opened.map { s in s.withUnsafeBytes { String(decoding: $0, as: UTF8.self) } }
    }
}
