import CMKCrypto
import CMKFormat

// Encrypted names: backing entry names and symlink targets read from data/.

private let nameCodec = try! NameCodec(key: [UInt8](repeating: 0x6E, count: AESSIV.keySize).withUnsafeBytes { SecretBytes(copying: $0) })
private let directoryID = [UInt8](repeating: 0xD1, count: NameCodec.directoryIDSize)

/// The input as a backing name through `NameCodec.decrypt`, `hash(ofLong:)` and
/// `decryptTarget`, and as a plaintext name through `encrypt`. A name that decrypts must
/// re-encrypt to exactly the same encoding (AES-SIV is deterministic and Base64URL canonical, so
/// two backing entries can never show as one name), and an encrypted name must be a legal
/// backing entry that decrypts back.
public func fuzzNames(_ data: [UInt8]) throws(FuzzViolation) {
    let text = String(decoding: data, as: UTF8.self)
    if let name = try? nameCodec.decrypt(text, directoryID: directoryID) {
        guard let again = try? nameCodec.encrypt(name, directoryID: directoryID) else {
            throw FuzzViolation("names", "a decrypted name does not encrypt again")
        }
        guard (again.fullName ?? again.backingName) == text else {
            throw FuzzViolation("names", "\(text) decrypts to a name whose encoding is \(again.fullName ?? again.backingName)")
        }
    }
    if let hash = NameCodec.hash(ofLong: text), hash.count != 32 {
        throw FuzzViolation("names", "a long name's hash of \(hash.count) bytes")
    }
    if let target = try? nameCodec.decryptTarget(text), target.isEmpty || target.utf8.contains(0) {
        throw FuzzViolation("names", "decryptTarget returned an empty target or one with NUL")
    }
    guard let encrypted = try? nameCodec.encrypt(text, directoryID: directoryID) else { return }
    let backing = Array(encrypted.backingName.utf8)
    guard backing.count <= NameCodec.maxNameLength, !backing.contains(0), !backing.contains(UInt8(ascii: "/")),
          !NameCodec.isInternal(encrypted.backingName) else {
        throw FuzzViolation("names", "encrypt made an illegal backing name \(encrypted.backingName)")
    }
    let full = encrypted.fullName ?? encrypted.backingName
    guard (try? nameCodec.decrypt(full, directoryID: directoryID)) == text else {
        throw FuzzViolation("names", "an encrypted name does not decrypt back")
    }
    if encrypted.fullName != nil {
        guard NameCodec.hash(ofLong: encrypted.backingName) == encrypted.hash else {
            throw FuzzViolation("names", "a long name's backing entry does not carry its hash")
        }
    }
}

func nameSeeds() -> [(name: String, bytes: [UInt8])] {
    func encoded(_ name: String) -> [UInt8] { Array(((try? nameCodec.encrypt(name, directoryID: directoryID)).map { $0.fullName ?? $0.backingName } ?? "").utf8) }
    let target = (try? nameCodec.encryptTarget("../some/where else"))?.backingName ?? ""
    return [("short", encoded("a")),
            ("sixteen", encoded("0123456789abcdef")),
            ("unicode", encoded("Überweisung 2026 ✓.pdf")),
            ("long", encoded(String(repeating: "long name ", count: 20))),
            ("long-backing-entry", Array(((try? nameCodec.encrypt(String(repeating: "x", count: 200), directoryID: directoryID))?.backingName ?? "").utf8)),
            ("symlink-target", Array(target.utf8)),
            ("plain-name", Array("report.txt".utf8))]
}
