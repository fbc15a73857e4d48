import CMKCrypto

/// User xattr values are sealed with the file's DEK: AES-256-GCM with AAD binding the file id
/// and the attribute name (docs/on-disk-format.md), stored as `nonce ‖ ciphertext ‖ tag`.
public enum XattrSeal {
    public static func aad(_ fileID: FileID, _ name: String) -> [UInt8] {
        Array("cmkfs.xattr.v1".utf8) + fileID.bytes + Array(name.utf8)
    }

    public static func seal(_ value: UnsafeRawBufferPointer, name: String, fileID: FileID, key: SecretBytes) throws(CryptoError) -> [UInt8] {
        try key.withUnsafeBytes { k throws(CryptoError) in try AESGCM().sealRecord(key: k, aad: aad(fileID, name), plaintext: value) }
    }

    public static func open(_ sealed: [UInt8], name: String, fileID: FileID, key: SecretBytes) throws(CryptoError) -> SecretBytes {
        try key.withUnsafeBytes { k throws(CryptoError) in try AESGCM().openRecord(key: k, aad: aad(fileID, name), record: sealed) }
    }
}
