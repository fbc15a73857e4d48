import Glibc
import CMKCrypto
import CMKFormat
import CMKKeys
import CMKMetadata
import CMKSystem

/// Encrypted file names: the name key and the mapping between mount paths and backing paths
/// (docs/on-disk-format.md, "Names").
///
/// The name key is 64 random bytes (AES-256-SIV) made at `init`, wrapped by the provider under
/// the active master-key version like a DEK, with its own wrap context (file id = 16 bytes of
/// 0xB0), and kept in `meta.db` (`meta['name_key']`, `meta['name_key_version']`). A rotation
/// re-wraps it under the new version; a purge refuses the version that wraps it.
extension Volume {
    static let nameKeyName = "name_key"
    static let nameKeyVersionName = "name_key_version"
    /// The wrap context's file id of the name key, and its key-cache id in the mount.
    public static let nameKeyFileID = [UInt8](repeating: 0xB0, count: 16)
    /// `names` in cmkfs.volume: names in clear (volume format 1) or AES-256-SIV (format 2).
    public static let plaintextNames = "plaintext"
    public static let encryptedNames = "aes-256-siv"

    /// Whether this volume's backing names are encrypted.
    public var encryptsNames: Bool { config.encryptsNames }

    /// The master-key version wrapping the name key now, or nil when the volume has none.
    public func nameKeyVersion() throws(MetadataError) -> Int? {
        try Self.nameKeyVersion(metadata)
    }

    static func nameKeyVersion(_ store: any VolumeFactStore) throws(MetadataError) -> Int? {
        try store.meta(nameKeyVersionName).flatMap { Int(String(decoding: $0, as: UTF8.self)) }
    }

    /// Unwraps the name key through the provider (the caller records the use); a provider's
    /// refusal or failure is kept as the error's cause.
    public func nameKeyAndVersion() throws(FileKeyError) -> (SecretBytes, KeyRef) {
        let edek: [UInt8]?, version: Int?
        do {
            edek = try metadata.meta(Self.nameKeyName)
            version = try nameKeyVersion()
        } catch { throw FileKeyError(.metadata(error), "the name key: \(error)") }
        guard let edek, let version else {
            throw FileKeyError(.missingRow, "the metadata database of \(path) has no name key")
        }
        let ref: KeyRef
        do { ref = try Self.masterKey(version: version, in: metadata, fallback: config.provider.keyID) } catch {
            throw FileKeyError(.metadata(error), "the name key: \(error)")
        }
        do {
            let key = try provider.unwrap(edek, with: ref, context: WrapContext(volumeID: volumeID, fileID: Self.nameKeyFileID, request: keyRequest()))
            return (key, ref)
        } catch { throw Self.keyError(error) }
    }

    /// Makes and stores a new volume's name key under `activeKey` (at `init`).
    static func createNameKey(store: any VolumeFactStore, provider: any KeyProvider, volumeID: [UInt8], activeKey: KeyRef) throws {
        let key = try SecretBytes.random(count: AESSIV.keySize)
        let edek = try provider.wrap(key, with: activeKey, context: WrapContext(volumeID: volumeID, fileID: nameKeyFileID, request: .ownProcess("init")))
        try store.setMeta(nameKeyName, edek)
        try store.setMeta(nameKeyVersionName, Array(String(activeKey.version).utf8))
    }

    /// The codec over the unwrapped name key for commands working on the backing tree
    /// (unwrapped once per process and kept; nil for a plaintext-names volume).
    public func nameCodec() throws(CMKError) -> NameCodec? {
        guard encryptsNames else { return nil }
        if let codec = codecCache.withLock({ $0 }) { return codec }
        let codec = try uncachedNameCodec()
        codecCache.withLock { $0 = codec }
        return codec
    }

    /// A codec that is not kept: for the mount's own start-up work, since the mount holds the
    /// name key only through its key-cache lease (so a revocation drops it).
    func uncachedNameCodec() throws(CMKError) -> NameCodec {
        let key: SecretBytes
        do { (key, _) = try nameKeyAndVersion() } catch {
            // A provider's answer (refused, unavailable, did not unwrap) is exit 5, as for every key.
            let provider = error.providerError
            let refused = provider.map { if case .keyDisabled = $0 { true } else if case .keyDestroyed = $0 { true } else { false } } ?? false
            let denied = provider.map { if case .accessDenied = $0 { true } else { false } } ?? false
            throw CMKError(provider != nil ? .keyUnavailable : .io,
                           "cannot unwrap the name key of \(path): \(error.description)",
                           hint: refused ? "enable the master key: cmkfs key enable \(path)"
                               : denied ? "the key provider refused this host's token or credentials: see cmkfs status \(path)" : nil)
        }
        do { return try NameCodec(key: key) } catch { throw CMKError(.notAVolume, "\(path): \(error)") }
    }

    /// The backing path, relative to `data/` (no leading slash; "" for the root), of the mount
    /// path `mountPath` ("/a/b" as the mount shows it; a leading slash is optional).
    ///
    /// With encrypted names each component is encrypted under its parent's directory id, read
    /// from the backing tree as the walk goes down, so every directory on the way must exist
    /// (the last component need not). Plaintext-names volumes map a path to itself. Throws
    /// `.usage` for "." or ".." components and for missing directories.
    public func backingPath(forMountPath mountPath: String) throws(CMKError) -> String {
        let components = mountPath.split(separator: "/").map(String.init)
        guard !components.contains("."), !components.contains("..") else {
            throw CMKError(.usage, "\(mountPath): '.' and '..' are not allowed")
        }
        guard let codec = try nameCodec() else { return components.joined(separator: "/") }
        var backing: [String] = []
        for (i, name) in components.enumerated() {
            let dir = backing.isEmpty ? dataPath : dataPath + "/" + backing.joined(separator: "/")
            let id = try directoryID(at: dir, showing: "/" + components[0..<i].joined(separator: "/"))
            do { backing.append(try codec.encrypt(name, directoryID: id).backingName) } catch {
                throw CMKError(.usage, "\(mountPath): \(error)")
            }
        }
        return backing.joined(separator: "/")
    }

    /// The mount path ("/a/b"; "/" for the root) of a backing path relative to `data/` (a
    /// leading slash or "data/" prefix is not expected). Throws `.io` naming the first component
    /// that does not decrypt (tampered, moved or not cmkfs's).
    public func mountPath(forBackingPath backingPath: String) throws(CMKError) -> String {
        try mountPath(forBackingPath: backingPath, codec: try nameCodec())
    }

    func mountPath(forBackingPath backingPath: String, codec: NameCodec?) throws(CMKError) -> String {
        let components = backingPath.split(separator: "/").map(String.init)
        guard let codec else { return "/" + components.joined(separator: "/") }
        var plain: [String] = []
        for (i, name) in components.enumerated() {
            let rel = components[0..<i].joined(separator: "/")
            let dir = rel.isEmpty ? dataPath : dataPath + "/" + rel
            let id = try directoryID(at: dir, showing: "/" + plain.joined(separator: "/"))
            do { plain.append(try decryptName(name, codec: codec, directoryID: id)) } catch {
                throw CMKError(.io, "backing entry \(rel.isEmpty ? name : rel + "/" + name): \(error)",
                               hint: "run: cmkfs fsck \(path)")
            }
        }
        return "/" + plain.joined(separator: "/")
    }

    /// Decrypts one backing entry name (a long name through its `long_names` row).
    public func decryptName(_ backingName: String, codec: NameCodec, directoryID: [UInt8]) throws(NameError) -> String {
        var encoded = backingName
        if NameCodec.isLong(backingName) {
            guard let hash = NameCodec.hash(ofLong: backingName) else { throw .malformed("not a long-name entry") }
            let full: String?
            do { full = try metadata.longName(hash: hash) } catch { throw .malformed("cannot read its long name: \(error)") }
            guard let full, (try? NameCodec.longHash(full)) == hash else { throw .malformed("its long name is missing from meta.db") }
            encoded = full
        }
        return try codec.decrypt(encoded, directoryID: directoryID)
    }

    func directoryID(at dir: String, showing: String) throws(CMKError) -> [UInt8] {
        let directory: FileDescriptor
        do { directory = try FileDescriptor.open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC) } catch {
            throw CMKError(.usage, "\(showing) is not a directory in the volume (\(error.errno))")
        }
        do { return try DirectoryID.read(directoryFD: directory.rawValue) } catch {
            throw CMKError(.io, "\(showing): \(error)", hint: "run: cmkfs fsck \(path)")
        }
    }
}
