import Logging
import Glibc
import Synchronization
import CMKAudit
import CMKCrypto
import CMKFormat
import CMKKeyService
import CMKKeys
import CMKVolume

/// Encrypted names inside the mount (docs/on-disk-format.md, "Names").
///
/// The name key is held as a lease of the key cache under the reserved file id
/// `Volume.nameKeyFileID`, pinned by the mount: a flush (`cmkfs key revoke`, `cache flush`), a
/// renewal that finds the master key disabled, or a lease past its lifetime drops it exactly like
/// a DEK, with no machinery of its own. The next name operation then asks the provider again
/// (an audited `name-key` use): EACCES while the key is revoked, and names work again once
/// `cmkfs key enable` has run.
///
/// Each directory's id is read once from its `.cmkfs-dirid` and kept on its inode (ids never
/// change), so a lookup costs one SIV encryption and the backing `openat`: O(1) in the
/// directory's size.
final class NameLayer: Sendable {
    let volume: Volume
    let cache: KeyCache
    let audit: (any AuditSink)?
    /// The pinned lease of the name key; replaced when a flush or expiry killed it.
    private let lease = Mutex<KeyLease?>(nil)
    /// The codec built from that lease's key; used only while the lease still answers its key,
    /// so a flushed name key is never used through it.
    private let keyedCodec = Mutex<(KeyLease, NameCodec)?>(nil)
    /// Backing directory path (relative to data/) → (its mount path, its id), for audit paths.
    /// Cleared when a directory is removed or renamed, so a reused path never maps to an old id.
    private let directories = Mutex<[String: (plain: String, id: [UInt8])]>([:])
    static let maxCachedDirectories = 4096

    init(volume: Volume, cache: KeyCache, audit: (any AuditSink)?) {
        self.volume = volume
        self.cache = cache
        self.audit = audit
    }

    /// The codec over the live name key, or the errno to answer (EACCES: revoked; EIO: the
    /// provider cannot be reached).
    func codec() -> Outcome<NameCodec> {
        let now = monotonicNow()
        if let current = lease.withLock({ $0 }), case .success(let key) = current.key(now: now) {
            return makeCodec(key, for: current)
        }
        // The lease is dead (flushed or expired): its keyed codec goes with it.
        dropKeyedCodec()
        var missed = false
        let fresh: KeyLease
        do {
            fresh = try cache.lease(for: Volume.nameKeyFileID) { () throws -> (SecretBytes, KeyRef) in
                missed = true
                do throws(FileKeyError) { return try volume.nameKeyAndVersion() } catch {
                    record(rc: error.errno, error: error.description, key: nil)
                    throw error
                }
            }
        } catch {
            let err = error as? FileKeyError
            FileSystem.logFailure(err?.errno ?? EIO, "the name key: \(err?.description ?? "\(error)")")
            return .failure(err?.errno ?? EIO)
        }
        if missed { record(rc: 0, error: nil, key: fresh.keyRef) }
        let old = lease.withLock { slot -> KeyLease? in
            let old = slot
            slot = fresh
            return old
        }
        if let old { cache.unpin(old) }
        guard case .success(let key) = fresh.key(now: monotonicNow()) else { return .failure(EACCES) }
        return makeCodec(key, for: fresh)
    }

    /// Forgets the codec (and OpenSSL's copy of the name key's schedule). The kill switch calls
    /// it; so does the first name operation after the name key's lease died another way (expiry).
    func dropKeyedCodec() {
        keyedCodec.withLock { $0 = nil }
    }

    /// The codec of `owner`'s key: built (and keyed into OpenSSL) once per lease, not per name.
    private func makeCodec(_ key: SecretBytes, for owner: KeyLease) -> Outcome<NameCodec> {
        if let (cachedOwner, codec) = keyedCodec.withLock({ $0 }), cachedOwner === owner { return .success(codec) }
        do {
            let codec = try NameCodec(key: key)
            keyedCodec.withLock { $0 = (owner, codec) }
            return .success(codec)
        } catch { return .failure(EIO) }
    }

    /// Each unwrap of the name key is a key use, audited like a DEK's.
    private func record(rc: Int32, error: String?, key: KeyRef?) {
        guard let audit else { return }
        let result = rc == 0 ? "ok" : (rc == EACCES ? "denied" : "error")
        try? audit.append(AuditEvent("name-key", result: result, errno: rc == 0 ? nil : rc, error: error,
                                     keyID: key?.keyID, keyVersion: key?.version, cache: "miss",
                                     detail: "the name key was unwrapped for file names"))
    }

    /// The id of the backing directory open at `fd`, cached on its inode.
    func directoryID(_ dir: Node) -> Outcome<[UInt8]> {
        if let id = dir.inode.directoryID.withLock({ $0 }) { return .success(id) }
        do {
            let id = try DirectoryID.read(directoryFD: dir.fd)
            dir.inode.directoryID.withLock { $0 = id }
            return .success(id)
        } catch {
            FileSystem.logger.error("directory inode \(dir.identity.inode): \(error)")
            return .failure(EIO)
        }
    }

    /// The backing name of `name` in `dir`. `creating`: the entry is about to be made, so a
    /// long name's full encoding is stored first (idempotent, content-addressed).
    func backingName(_ dir: Node, _ name: String, creating: Bool) -> (String, Int32) {
        guard name.utf8.count <= NameCodec.maxNameLength else { return ("", ENAMETOOLONG) }
        let codec: NameCodec, id: [UInt8]
        switch self.codec() { case .success(let c): codec = c; case .failure(let e): return ("", e) }
        switch directoryID(dir) { case .success(let d): id = d; case .failure(let e): return ("", e) }
        let encrypted: NameCodec.Encrypted
        do { encrypted = try codec.encrypt(name, directoryID: id) } catch { return ("", error.errno) }
        if creating, let full = encrypted.fullName, let hash = encrypted.hash {
            do { try volume.metadata.setLongName(hash: hash, name: full) } catch {
                FileSystem.logger.error("cannot store a long name: \(error)")
                return ("", EIO)
            }
        }
        return (encrypted.backingName, 0)
    }

    /// Drops the stored encoding of a long backing name whose entry is gone.
    func forget(_ backingName: String) {
        guard let hash = NameCodec.hash(ofLong: backingName) else { return }
        do { try volume.metadata.deleteLongName(hash: hash) } catch {
            FileSystem.logger.warning("a removed long name's row stays behind (an orphan for fsck): \(error)")
        }
    }

    /// What the backing symlink for `plain` holds: its encoding, or for a long one the long
    /// form, whose encoding is stored in meta.db first.
    func storedTarget(_ plain: String) -> Outcome<String> {
        let codec: NameCodec
        switch self.codec() { case .success(let c): codec = c; case .failure(let e): return .failure(e) }
        let encrypted: NameCodec.Encrypted
        do { encrypted = try codec.encryptTarget(plain) } catch { return .failure(error.errno) }
        if let full = encrypted.fullName, let hash = encrypted.hash {
            do { try volume.metadata.setLongName(hash: hash, name: full) } catch {
                FileSystem.logger.error("cannot store a long symlink target: \(error)")
                return .failure(EIO)
            }
        }
        return .success(encrypted.backingName)
    }

    /// The plaintext of a backing symlink's target (a long one through its meta.db row);
    /// EIO when it does not decrypt or its row is missing.
    func plainTarget(_ stored: String) -> Outcome<String> {
        let codec: NameCodec
        switch self.codec() { case .success(let c): codec = c; case .failure(let e): return .failure(e) }
        var encoding = stored
        if let hash = NameCodec.hash(ofLong: stored) {
            guard let full = try? volume.metadata.longName(hash: hash), (try? NameCodec.longHash(full)) == hash else {
                return .failure(EIO)
            }
            encoding = full
        }
        do { return .success(try codec.decryptTarget(encoding)) } catch { return .failure(EIO) }
    }

    /// Drops the stored encoding of a long symlink target whose symlink is gone.
    func forgetTarget(_ stored: String) { forget(stored) }

    /// A directory was removed or renamed: cached paths may be wrong now.
    func directoriesChanged() { directories.withLock { $0.removeAll() } }

    /// The mount path of a backing path relative to data/ ("" is the root), decrypting each
    /// component; directories on the way are cached. nil when a component does not decrypt.
    func mountPath(ofBacking rel: String) -> String? {
        guard case .success(let codec) = codec() else { return nil }
        if rel.isEmpty { return "/" }
        let parent = rel.lastIndex(of: "/").map { String(rel[..<$0]) } ?? ""
        let leaf = rel.lastIndex(of: "/").map { String(rel[rel.index(after: $0)...]) } ?? rel
        guard let (plainParent, id) = directory(parent, codec: codec),
              let name = try? volume.decryptName(leaf, codec: codec, directoryID: id) else { return nil }
        return (plainParent == "/" ? "" : plainParent) + "/" + name
    }

    private func directory(_ rel: String, codec: NameCodec) -> (String, [UInt8])? {
        if let hit = directories.withLock({ $0[rel] }) { return (hit.plain, hit.id) }
        let plain: String
        if rel.isEmpty { plain = "/" } else {
            guard let p = mountPath(ofBacking: rel) else { return nil }
            plain = p
        }
        let fd = Glibc.open(volume.dataPath + (rel.isEmpty ? "" : "/" + rel), O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        guard let id = try? DirectoryID.read(directoryFD: fd) else { return nil }
        directories.withLock { d in
            if d.count >= Self.maxCachedDirectories { d.removeAll() }
            d[rel] = (plain, id)
        }
        return (plain, id)
    }

    /// The backing path (relative to data/) of a mount path, walking from `rootFD`: each
    /// directory's id is read on the way. For control requests (rekey), not for FUSE traffic.
    func backingPath(ofMount path: String, rootFD: Int32) -> (String, Int32) {
        guard case .success(let codec) = codec() else { return ("", EACCES) }
        let components = path.split(separator: "/").map(String.init)
        var out: [String] = []
        var dirFD = dup(rootFD)
        guard dirFD >= 0 else { return ("", errno) }
        defer { close(dirFD) }
        for (i, name) in components.enumerated() {
            guard let id = try? DirectoryID.read(directoryFD: dirFD) else { return ("", EIO) }
            guard let encrypted = try? codec.encrypt(name, directoryID: id) else { return ("", EINVAL) }
            out.append(encrypted.backingName)
            if i < components.count - 1 {
                let next = openat(dirFD, encrypted.backingName, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                guard next >= 0 else { return ("", errno) }
                close(dirFD)
                dirFD = next
            }
        }
        return (out.joined(separator: "/"), 0)
    }
}

/// A value or the errno to answer.
enum Outcome<T> {
    case success(T)
    case failure(Int32)
}
