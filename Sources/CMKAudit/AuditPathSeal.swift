import Foundation
import Synchronization
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
    /// and its cipher setup were most of a path's sealing cost). Seals keep the key scheduled
    /// (`seal(sameKey:)`); an `open` re-keys its context, and the next seal schedules it again.
    let contexts = AESGCM.Pool()
    /// The records' nonces: fresh random bytes for each record, drawn from the CSPRNG a batch at
    /// a time (`NonceSource`), each handed out once; a `RAND_bytes` call per record was a fifth
    /// of a path's sealing cost.
    let nonces = Nonces()
    /// One batch of nonces for the threads that seal paths (a nonce is taken under its lock).
    final class Nonces: Sendable {
        let source = Mutex(NonceSource())
    }
    static let label = Array("cmkfs.audit.path.v2".utf8)
    static let aad = Array("cmkfs.audit.path".utf8)

    /// The path key of `auditKey`.
    public init(auditKey: SecretBytes) throws(CryptoError) {
        var derived = try HMACSHA256.mac(key: auditKey, Self.label)
        key = derived.withUnsafeBytes { SecretBytes(copying: $0) }
        for i in derived.indices { derived[i] = 0 }
    }

    /// `path` sealed, as the field's text: the path's UTF-8 read in place, sealed into one
    /// buffer and encoded from it (a copy of the path, an allocation and a `Data` per record were
    /// half of the sealing cost).
    public func seal(_ path: String) throws(CryptoError) -> String {
        var path = path
        let count = path.utf8.count
        let sealedCount = AESGCM.nonceSize + count + AESGCM.tagSize
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: sealedCount, alignment: 16)
        defer { buffer.deallocate() }
        let base = buffer.baseAddress!
        // The nonce is random per record (docs/audit-format.md: equal paths do not look equal).
        try nonces.source.withLock { (source: inout NonceSource) throws(CryptoError) in try source.fill(base) }
        // withUTF8 rethrows untyped errors: the typed one is carried out as a Result.
        let sealed: Result<Void, CryptoError> = path.withUTF8 { plain in
            Result { () throws(CryptoError) in
                try contexts.with { gcm throws(CryptoError) in
                    try key.withUnsafeBytes { k throws(CryptoError) in
                        try Self.aad.withUnsafeBufferPointer { a throws(CryptoError) in
                            try gcm.seal(sameKey: k, nonce: base, aad: UnsafeRawBufferPointer(a), plaintext: UnsafeRawBufferPointer(plain),
                                         ciphertext: base + AESGCM.nonceSize, tag: base + AESGCM.nonceSize + count)
                        }
                    }
                }
            }
        }
        try sealed.get()
        return AuditBase64.encode(UnsafeRawBufferPointer(buffer))
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
