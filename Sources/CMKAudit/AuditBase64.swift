import CMKCrypto

/// Standard base64 with padding (RFC 4648 §4), the encoding of a record's sealed `path`
/// (docs/audit-format.md), through `Base64Table`: Foundation's `Data.base64EncodedString` (with
/// a `Data` built first) was a fifth of a path's sealing cost.
enum AuditBase64 {
    static func encode(_ bytes: UnsafeRawBufferPointer) -> String {
        Base64Table.encode(bytes, alphabet: Base64Table.standard, padded: true)
    }
}
