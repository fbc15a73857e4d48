/// Where the head of the chain is anchored outside the volume (docs/audit-format.md, "Anchor"):
/// the key provider keeps the latest checkpoint the mount gave it, so whoever can rewrite the
/// volume (its `audit/` and `meta.db` together) cannot roll the log back without `audit verify`
/// naming it.
///
/// The anchor's bytes are an `AuditCheckpoint` (MACed under the audit key), so the store needs no
/// key and cannot forge one; a store may refuse to move backwards (the socket KMS does).
public protocol AuditAnchorStore: Sendable {
    /// Where the anchor is kept, for messages ("cmkfs-kms at /run/kms.sock").
    var place: String { get }
    /// The stored anchor, or nil when none was ever stored.
    func loadAnchor() throws -> [UInt8]?
    /// Replaces the anchor with `bytes`, the checkpoint of record `seq`.
    func saveAnchor(_ bytes: [UInt8], seq: UInt64) throws
}

/// The event of the record a writer chains when the log it opens is behind its last checkpoint
/// or anchor. `audit verify` reports any such record as a `gap`, for ever after.
public enum AuditGap {
    public static let event = "audit-gap"
}
