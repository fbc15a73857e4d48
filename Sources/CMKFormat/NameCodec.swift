import Glibc
import CMKSystem
import CMKCrypto

/// Encrypted file names (volume format 2, `"names": "aes-256-siv"`): see docs/on-disk-format.md.
///
/// A name is sealed with AES-256-SIV under the volume's name key, with the label
/// `cmkfs.name.v1` and the 16-byte id of its directory as associated data, after padding it
/// with NUL bytes to a multiple of 16 (a name never contains NUL). The backing name is the
/// base64url (no padding) of `tag ‖ ciphertext`. SIV is deterministic, so a lookup encrypts the
/// name it is asked for and opens one backing entry: O(1) in the directory's size. The
/// directory id makes equal names in different directories encrypt differently.
///
/// Encodings longer than `maxDirectLength` characters (plaintext names over 112 bytes) are
/// stored as `L.` + base64url(SHA-256(encoding)) — 45 characters — and the full encoding is kept
/// in `meta.db` (`long_names`), keyed by that hash: lookups still need no scan, and readdir
/// fetches the full encoding to decrypt it.
///
/// Symlink targets are sealed with AES-256-SIV under the same key with the label
/// `cmkfs.symlink.v1` and a fresh random 16-byte nonce as associated data (randomized: equal
/// targets do not look equal), stored as base64url(`nonce ‖ tag ‖ ciphertext`).
public struct NameCodec: Sendable {
    /// The longest plaintext name (Linux NAME_MAX).
    public static let maxNameLength = 255
    /// The longest backing name stored as it is; longer encodings use the long form.
    public static let maxDirectLength = 175
    /// The longest symlink target (Linux PATH_MAX less its NUL).
    public static let maxTargetLength = Int(PATH_MAX) - 1
    /// The longest encoded symlink target stored in the backing symlink itself (plaintext targets
    /// up to 720 bytes). Fits every backing filesystem's limit, even ext4 with 1 KiB blocks,
    /// whose symlinks hold at most 1,023 bytes; longer ones use the long form.
    public static let maxDirectTargetLength = 1023
    /// The prefix of a long-name backing entry (`.` never occurs in base64url).
    public static let longPrefix = "L."
    /// The file in every backing directory holding the directory's 16-byte id.
    public static let directoryIDFile = ".cmkfs-dirid"
    /// Size of a directory id.
    public static let directoryIDSize = 16
    static let nameLabel = Array("cmkfs.name.v1".utf8)
    static let targetLabel = Array("cmkfs.symlink.v1".utf8)
    static let padding = 16

    /// How one plaintext name is stored in its backing directory.
    public struct Encrypted: Sendable, Equatable {
        /// The entry's name in the backing directory.
        public var backingName: String
        /// For a long name: the full encoding (kept in meta.db under `hash`); nil otherwise.
        public var fullName: String?
        /// For a long name: SHA-256 of the full encoding (the key of its meta.db row).
        public var hash: [UInt8]?
    }

    /// The name key (64 bytes, shared by every directory of the volume), keyed into OpenSSL once
    /// per codec: keep a codec rather than making one per name.
    let key: AESSIVKey
    /// HMAC-SHA256(name key, "cmkfs.link-key.v1"): the key of name bindings (`linkTag`), kept
    /// apart from the SIV key by derivation rather than used for two algorithms.
    let bindKey: SecretBytes
    /// Contexts keyed with `bindKey` once, not per tag (every create and key-miss open makes or
    /// checks one); they go with the codec, like the SIV contexts.
    let bindMACs: HMACSHA256.KeyedPool
    static let bindKeyLabel = Array("cmkfs.link-key.v1".utf8)
    static let bindLabel = Array("cmkfs.link.v1".utf8)
    /// Bytes of a name binding's tag.
    public static let linkTagSize = 16

    /// A codec over the volume's unwrapped name key.
    public init(key: SecretBytes) throws(NameError) {
        guard key.count == AESSIV.keySize else { throw .malformed("the name key has \(key.count) bytes, expected \(AESSIV.keySize)") }
        do {
            self.key = try AESSIVKey(key)
            var derived = try HMACSHA256.mac(key: key, Self.bindKeyLabel)
            defer { derived.withUnsafeMutableBytes { secureZero($0) } }
            let bind = SecretBytes(zeroedCount: derived.count)
            bind.withUnsafeMutableBytes { $0.copyBytes(from: derived) }
            bindKey = bind
            bindMACs = HMACSHA256.KeyedPool(key: bind)
        } catch { throw .crypto(error) }
    }

    /// The tag binding the file `fileID` to the entry `backingName` of the directory with id
    /// `directoryID`: a truncated HMAC, so only a holder of the name key can make one.
    public func linkTag(fileID: [UInt8], directoryID: [UInt8], backingName: String) throws(NameError) -> [UInt8] {
        do {
            let mac = try bindMACs.mac([Self.bindLabel, fileID, directoryID, Array(backingName.utf8)])
            return Array(mac.prefix(Self.linkTagSize))
        } catch { throw .crypto(error) }
    }

    /// Encrypts `name` (one path component) for the directory with id `directoryID`.
    public func encrypt(_ name: String, directoryID: [UInt8]) throws(NameError) -> Encrypted {
        let count = name.utf8.count
        guard count > 0, count <= Self.maxNameLength else { throw .tooLong }
        // Copied once, straight into its padded buffer, checked on the way.
        let total = Self.paddedCount(count)
        var forbidden = false
        let padded = [UInt8](unsafeUninitializedCapacity: total) { out, initialized in
            var i = 0
            for c in name.utf8 {
                forbidden = forbidden || c == 0 || c == UInt8(ascii: "/")
                out[i] = c
                i += 1
            }
            while i < total { out[i] = 0; i += 1 }
            initialized = total
        }
        guard !forbidden, name != ".", name != ".." else { throw .malformed("not a file name") }
        let sealed: [UInt8]
        do { sealed = try AESSIV.seal(key: key, associatedData: [Self.nameLabel, directoryID], plaintext: padded) } catch {
            throw .crypto(error)
        }
        let encoded = Base64URL.encode(sealed)
        guard encoded.utf8.count > Self.maxDirectLength else { return Encrypted(backingName: encoded) }
        let hash = try Self.longHash(encoded)
        return Encrypted(backingName: Self.longPrefix + Base64URL.encode(hash), fullName: encoded, hash: hash)
    }

    /// Decrypts a direct backing name, or the full encoding of a long one, in the directory with
    /// id `directoryID`. Throws for anything that was not made by `encrypt` under this key and
    /// this directory id (a tampered, moved or foreign name).
    public func decrypt(_ encoded: String, directoryID: [UInt8]) throws(NameError) -> String {
        guard let sealed = Base64URL.decode(encoded), sealed.count >= AESSIV.tagSize + Self.padding,
              (sealed.count - AESSIV.tagSize) % Self.padding == 0 else {
            throw .malformed("not an encrypted name")
        }
        let padded: [UInt8]
        do { padded = try AESSIV.open(key: key, associatedData: [Self.nameLabel, directoryID], sealed: sealed) } catch {
            throw .authenticationFailed
        }
        return try Self.unpad(padded)
    }

    /// The row key of a long name: SHA-256 of its full encoding.
    public static func longHash(_ fullName: String) throws(NameError) -> [UInt8] {
        do { return try SHA256.hash(Array(fullName.utf8)) } catch { throw .crypto(error) }
    }

    /// Whether a backing entry is a long name (its full encoding is in meta.db).
    public static func isLong(_ backingName: String) -> Bool { backingName.hasPrefix(longPrefix) }

    /// The hash a long backing name carries, or nil when `backingName` is not one.
    public static func hash(ofLong backingName: String) -> [UInt8]? {
        guard isLong(backingName), let hash = Base64URL.decode(String(backingName.dropFirst(longPrefix.count))),
              hash.count == SHA256.size else { return nil }
        return hash
    }

    /// Whether a backing entry is cmkfs's own (the directory id, a directory being made):
    /// hidden from readdir. Encrypted names never start with a dot.
    public static func isInternal(_ backingName: String) -> Bool {
        backingName.hasPrefix(".") && backingName != "." && backingName != ".."
    }

    /// Encrypts a symlink target (randomized) of up to `maxTargetLength` bytes. An encoding
    /// longer than `maxDirectTargetLength` is stored in the long form, like a long name: the
    /// backing symlink holds `L.` + base64url(SHA-256(encoding)) and meta.db the encoding.
    public func encryptTarget(_ target: String) throws(NameError) -> Encrypted {
        let plain = Array(target.utf8)
        guard !plain.isEmpty, !plain.contains(0) else { throw .malformed("not a symlink target") }
        guard plain.count <= Self.maxTargetLength else { throw .tooLong }
        let encoded: String
        do {
            let nonce = try SecureRandom.bytes(16)
            let sealed = try AESSIV.seal(key: key, associatedData: [Self.targetLabel, nonce], plaintext: Self.pad(plain))
            encoded = Base64URL.encode(nonce + sealed)
        } catch { throw .crypto(error) }
        guard encoded.utf8.count > Self.maxDirectTargetLength else { return Encrypted(backingName: encoded) }
        let hash = try Self.longHash(encoded)
        return Encrypted(backingName: Self.longPrefix + Base64URL.encode(hash), fullName: encoded, hash: hash)
    }

    /// Decrypts a symlink target made by `encryptTarget`.
    public func decryptTarget(_ encoded: String) throws(NameError) -> String {
        guard let raw = Base64URL.decode(encoded), raw.count >= 16 + AESSIV.tagSize + Self.padding,
              (raw.count - 16 - AESSIV.tagSize) % Self.padding == 0 else {
            throw .malformed("not an encrypted symlink target")
        }
        let padded: [UInt8]
        do { padded = try AESSIV.open(key: key, associatedData: [Self.targetLabel, Array(raw[0..<16])], sealed: Array(raw[16...])) } catch {
            throw .authenticationFailed
        }
        return try Self.unpad(padded)
    }

    /// NUL bytes up to the next multiple of 16 (at least 16): hides a name's exact length.
    static func pad(_ plain: [UInt8]) -> [UInt8] {
        plain + [UInt8](repeating: 0, count: paddedCount(plain.count) - plain.count)
    }

    /// Bytes of a padded plaintext of `count` bytes.
    static func paddedCount(_ count: Int) -> Int { max(padding, (count + padding - 1) / padding * padding) }

    /// Strips the padding; only the shortest padding `pad` makes is accepted.
    static func unpad(_ padded: [UInt8]) throws(NameError) -> String {
        var end = padded.count
        while end > 0 && padded[end - 1] == 0 { end -= 1 }
        guard end > 0, paddedCount(end) == padded.count, !padded[0..<end].contains(0) else {
            throw .malformed("bad padding")
        }
        return String(decoding: padded[0..<end], as: UTF8.self)
    }
}

/// A name that could not be encrypted or decrypted. The FUSE layer alone decides its errno
/// (`Sources/CMKFuse/Errno+Mapping.swift`).
public enum NameError: Error, Equatable, CustomStringConvertible {
    /// A name longer than 255 bytes or a target longer than 4,095.
    case tooLong
    /// Not a name (for encrypt) or not an encoding (for decrypt).
    case malformed(String)
    /// The encoding did not authenticate: tampered, moved to another directory, or foreign.
    case authenticationFailed
    case crypto(CryptoError)

    public var description: String {
        switch self {
        case .tooLong: return "name too long"
        case .malformed(let why): return why
        case .authenticationFailed: return "encrypted name failed authentication (tampered or moved)"
        case .crypto(let error): return "\(error)"
        }
    }
}

/// The directory id of a backing directory: `.cmkfs-dirid`, 16 random bytes, written when the
/// directory is made. Kept as a file (like gocryptfs' `gocryptfs.diriv`) so it survives cp, tar
/// and rsync of the backing tree without xattr options.
public enum DirectoryID {
    /// Reads the id of the directory open at `dirFD`.
    public static func read(directoryFD: Int32) throws(NameError) -> [UInt8] {
        let file: FileDescriptor
        do { file = try Descriptor(rawValue: directoryFD).openat(NameCodec.directoryIDFile, O_RDONLY | O_NOFOLLOW | O_CLOEXEC) }
        catch { throw .malformed("directory has no \(NameCodec.directoryIDFile): \(error.errno)") }
        let bytes = (try? file.descriptor.read(upTo: NameCodec.directoryIDSize + 1)) ?? []
        guard bytes.count == NameCodec.directoryIDSize else { throw .malformed("\(NameCodec.directoryIDFile) has \(bytes.count) bytes, expected 16") }
        return bytes
    }

    /// Writes `id` (fresh when nil) as the id of the directory open at `dirFD`; returns it.
    @discardableResult
    public static func create(directoryFD: Int32, id: [UInt8]? = nil) throws(NameError) -> [UInt8] {
        let bytes: [UInt8]
        if let id { bytes = id } else {
            do { bytes = try SecureRandom.bytes(NameCodec.directoryIDSize) } catch { throw .crypto(error) }
        }
        let file: FileDescriptor
        do { file = try Descriptor(rawValue: directoryFD).openat(NameCodec.directoryIDFile, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode: 0o444) }
        catch { throw .malformed("cannot create \(NameCodec.directoryIDFile): \(error.errno)") }
        do { try file.descriptor.writeAll(bytes) }
        catch { throw .malformed("cannot write \(NameCodec.directoryIDFile): \(error.errno)") }
        return bytes
    }
}
