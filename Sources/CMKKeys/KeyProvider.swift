import CMKCrypto

/// A master-key version inside a provider: the key id the provider gave it and its version.
public struct KeyRef: Hashable, Sendable, CustomStringConvertible {
    public let keyID: String
    public let version: Int
    public init(keyID: String, version: Int) {
        self.keyID = keyID
        self.version = version
    }
    public var description: String { "\(keyID) v\(version)" }
}

/// What a wrap binds the DEK to: unwrapping under any other context fails, so an EDEK copied
/// onto another file's row (or another volume) is useless.
///
/// It also carries the `request` (who asked, what for, from where, and the request id), which a
/// provider sends to its server for the key owner's own log. The request is not part of the
/// binding: equality and `associatedData` look at the volume and file ids only.
public struct WrapContext: Sendable, Equatable {
    public let volumeID: [UInt8]
    public let fileID: [UInt8]
    /// Who asked for this wrap or unwrap; nil where no one attributable asked (tests, fuzzing).
    public var request: KeyRequest?

    public init(volumeID: [UInt8], fileID: [UInt8], request: KeyRequest? = nil) {
        self.volumeID = volumeID
        self.fileID = fileID
        self.request = request
    }

    /// Equal when they bind the same: the request is no part of the binding.
    public static func == (a: WrapContext, b: WrapContext) -> Bool {
        a.volumeID == b.volumeID && a.fileID == b.fileID
    }

    /// The associated data every provider binds: a label, the key version, volume and file ids.
    public func associatedData(for key: KeyRef) -> [UInt8] {
        // Written into one buffer of the exact size (every wrap and unwrap builds it): the bytes
        // are label, u16 id length, id, u32 version, u8 volume-id length, volume id, u8 file-id
        // length, file id.
        var keyID = key.keyID
        return keyID.withUTF8 { id in
            let count = Self.label.count + 2 + id.count + 4 + 1 + volumeID.count + 1 + fileID.count
            return [UInt8](unsafeUninitializedCapacity: count) { out, initialized in
                var at = 0
                func put(_ bytes: UnsafeBufferPointer<UInt8>) {
                    for b in bytes { out[at] = b; at += 1 }
                }
                func put(_ byte: UInt8) { out[at] = byte; at += 1 }
                Self.label.withUnsafeBufferPointer { put($0) }
                put(UInt8(id.count >> 8))
                put(UInt8(truncatingIfNeeded: id.count & 0xFF))
                put(id)
                let version = UInt32(key.version)
                put(UInt8(version >> 24)); put(UInt8((version >> 16) & 0xFF)); put(UInt8((version >> 8) & 0xFF)); put(UInt8(version & 0xFF))
                put(UInt8(volumeID.count))
                volumeID.withUnsafeBufferPointer { put($0) }
                put(UInt8(fileID.count))
                fileID.withUnsafeBufferPointer { put($0) }
                initialized = at
            }
        }
    }

    static let label = Array("cmkfs.edek.v1".utf8)
}

/// The lifecycle state of a master-key version inside its provider.
public enum ProviderKeyState: String, Sendable, Codable {
    /// Usable for wrap and unwrap.
    case enabled
    /// Refuses every operation until enabled again (the customer's kill switch).
    case disabled
    /// Gone for good: nothing it wrapped can ever be unwrapped.
    case destroyed
}

/// A holder of master keys that wraps and unwraps data keys without ever releasing a master key.
///
/// Implementations: the embedded simulated KMS (in-process, default), the same KMS served over a
/// Unix socket, and PKCS#11 HSMs. Calls may block on I/O; callers never hold a lock across one.
public protocol KeyProvider: Sendable {
    /// A short name for logs and `status` ("embedded", "socket", "pkcs11").
    var kind: String { get }

    /// Creates a new master key (version 1) and returns it.
    func createKey() throws(KeyProviderError) -> KeyRef
    /// Creates the next version of `keyID` (rotation) and returns it.
    func createVersion(of keyID: String) throws(KeyProviderError) -> KeyRef
    /// Wraps `dek` under `key`, bound to `context`. A provider that talks to a server sends
    /// `context.request` with the call (the server's log of key uses) and leaves the server's
    /// own request id, if it gives one, in `context.request?.receipt`.
    func wrap(_ dek: SecretBytes, with key: KeyRef, context: WrapContext) throws(KeyProviderError) -> [UInt8]
    /// Unwraps an EDEK made by `wrap` with the same key and context.
    func unwrap(_ edek: [UInt8], with key: KeyRef, context: WrapContext) throws(KeyProviderError) -> SecretBytes
    /// The state of `key` as the provider sees it now.
    func state(of key: KeyRef) throws(KeyProviderError) -> ProviderKeyState
    /// Changes the state of `key`: enable, disable, or destroy (irreversible).
    func setState(_ state: ProviderKeyState, of key: KeyRef) throws(KeyProviderError)

    /// Whether each master-key version is a key of its own in the provider, disabled and destroyed
    /// apart from the others. False where versions are labels over one provider key (AWS KMS):
    /// `key purge` then retires a version in the volume without touching the provider's key.
    var versionsAreSeparateKeys: Bool { get }

    /// Where this provider keeps a volume's audit anchor (for messages), or nil if it keeps none.
    func anchorPlace(volumeID: [UInt8]) -> String?
    /// The audit anchor of a volume (opaque bytes, MACed by the writer), or nil if none yet.
    func auditAnchor(volumeID: [UInt8]) throws(KeyProviderError) -> [UInt8]?
    /// Stores the audit anchor of record `seq`. A provider refuses to move an anchor back to a
    /// lower seq (a rollback), with `.unavailable` saying so.
    func setAuditAnchor(_ anchor: [UInt8], seq: UInt64, volumeID: [UInt8]) throws(KeyProviderError)
}

extension KeyProvider {
    public var versionsAreSeparateKeys: Bool { true }
    public func anchorPlace(volumeID: [UInt8]) -> String? { nil }
    public func auditAnchor(volumeID: [UInt8]) throws(KeyProviderError) -> [UInt8]? { nil }
    public func setAuditAnchor(_ anchor: [UInt8], seq: UInt64, volumeID: [UInt8]) throws(KeyProviderError) {}
}

/// The stored form of an audit anchor, the same for every provider: `seq` in decimal, a newline,
/// then the anchor's bytes. The seq is what a provider compares to refuse a rollback.
public enum AnchorRecord {
    public static func encode(_ anchor: [UInt8], seq: UInt64) -> [UInt8] { Array("\(seq)\n".utf8) + anchor }

    public static func decode(_ bytes: [UInt8]) -> (seq: UInt64, anchor: [UInt8])? {
        guard let newline = bytes.firstIndex(of: 0x0A), newline > 0, newline < 21,
              let seq = UInt64(String(decoding: bytes[..<newline], as: UTF8.self)) else { return nil }
        return (seq, Array(bytes[(newline + 1)...]))
    }
}
