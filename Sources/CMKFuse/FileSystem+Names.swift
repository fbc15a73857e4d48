import Dispatch
import Logging
import Glibc
import Synchronization
import CMKAudit
import CMKCrypto
import CMKFormat
import CMKKeyService
import CMKKeys
import CMKMetrics
import CMKSystem
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
    /// The codec built from that lease's key, with the backing names it made or read lately
    /// (`RecentNames`); used only while the lease still answers its key, so a flushed name key
    /// is never used through it, and dropped with it.
    private let keyedCodec = Mutex<Keyed?>(nil)
    private struct Keyed {
        let owner: KeyLease
        let codec: NameCodec
        var recent = RecentNames()
    }
    /// Backing directory path (relative to data/) → (its mount path, its id), for audit paths.
    /// Cleared when a directory is removed or renamed, so a reused path never maps to an old id.
    private let directories = Mutex<[String: (plain: String, id: [UInt8])]>([:])
    static let maxCachedDirectories = 4096
    /// Whether a background lease of the name key (`leaseAgainAfterKeyMiss`) is under way.
    private let leasing = Atomic<Bool>(false)

    init(volume: Volume, cache: KeyCache, audit: (any AuditSink)?) {
        self.volume = volume
        self.cache = cache
        self.audit = audit
    }

    /// The codec over the live name key; throws why the name key cannot be had (a revoked
    /// master key, a provider that cannot be reached).
    func codec() throws(FSError) -> NameCodec {
        let now = monotonicNow()
        if let current = lease.withLock({ $0 }), case .success(let key) = current.key(now: now) {
            return try makeCodec(key, for: current)
        }
        // The lease is dead (flushed or expired): its keyed codec goes with it.
        dropKeyedCodec()
        var missed = false
        let fresh: KeyLease
        do throws(FileKeyError) {
            fresh = try cache.lease(for: Volume.nameKeyFileID) { () throws(FileKeyError) -> (SecretBytes, KeyRef) in
                missed = true
                do throws(FileKeyError) { return try volume.nameKeyAndVersion() } catch {
                    record(rc: FSError.fileKey(error).errno, error: error.description, key: nil)
                    throw error
                }
            }
        } catch {
            let failure = FSError.fileKey(error)
            FileSystem.logFailure(failure.errno, "the name key: \(error.description)")
            throw failure
        }
        if missed { record(rc: 0, error: nil, key: fresh.keyRef) }
        let old = lease.withLock { slot -> KeyLease? in
            let old = slot
            slot = fresh
            return old
        }
        if let old { cache.unpin(old) }
        switch fresh.key(now: monotonicNow()) {
        case .success(let key): return try makeCodec(key, for: fresh)
        case .failure(let refusal): throw .refused(refusal)
        }
    }

    /// Whether the name key is held now (`cmkfs metrics`: `cmkfs_name_key_cached`).
    var isKeyCached: Bool { lease.withLock { $0 }?.isLive ?? false }

    /// A data key was just leased again through the provider (a key miss): if the name key is
    /// not held, lease it again too, on a background thread (the open's reply does not wait for
    /// the provider), at most one at a time. Opens join their audit paths from noted names and
    /// need no name key, so without this a `cache flush` left the name key out until the next
    /// lookup: with the KMS unreachable by then, lookups failed (EIO) while the data keys
    /// leased after the flush still served. The lease is a key use like any other: a `name-key`
    /// audit record, ok or refused (a revoked master key gets no name key here either).
    func leaseAgainAfterKeyMiss() {
        guard !isKeyCached, leasing.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged else { return }
        DispatchQueue.global(qos: .utility).async { [self] in
            defer { leasing.store(false, ordering: .releasing) }
            // A failure is logged and recorded by `codec()`; the next name operation asks again.
            _ = try? codec()
        }
    }

    /// Forgets the codec (and OpenSSL's copy of the name key's schedule). The kill switch calls
    /// it; so does the first name operation after the name key's lease died another way (expiry).
    func dropKeyedCodec() {
        keyedCodec.withLock { $0 = nil }
    }

    /// The codec of `owner`'s key: built (and keyed into OpenSSL) once per lease, not per name.
    private func makeCodec(_ key: SecretBytes, for owner: KeyLease) throws(FSError) -> NameCodec {
        if let codec = keyedCodec.withLock({ $0?.owner === owner ? $0?.codec : nil }) { return codec }
        do {
            let codec = try NameCodec(key: key)
            keyedCodec.withLock { $0 = Keyed(owner: owner, codec: codec) }
            return codec
        } catch { throw .corrupt("the name key does not make a name codec: \(error)") }
    }

    /// Each unwrap of the name key is a key use, audited like a DEK's.
    private func record(rc: Int32, error: String?, key: KeyRef?) {
        if rc != 0 { Metrics.shared.denials.add(rc) }
        guard let audit else { return }
        let result = rc == 0 ? "ok" : (rc == EACCES ? "denied" : "error")
        try? audit.append(AuditEvent("name-key", result: result, errno: rc == 0 ? nil : rc, error: error,
                                     keyID: key?.keyID, keyVersion: key?.version, cache: "miss",
                                     detail: "the name key was unwrapped for file names"))
    }

    /// The id of the backing directory open at `fd`, cached on its inode.
    func directoryID(_ dir: Node) throws(FSError) -> [UInt8] {
        if let id = dir.inode.directoryID { return id }
        do {
            let id = try DirectoryID.read(directoryFD: dir.fd)
            dir.inode.noteDirectoryID(id)
            return id
        } catch {
            FileSystem.logger.error("directory inode \(dir.identity.inode): \(error)")
            throw .corrupt("directory inode \(dir.identity.inode): \(error)")
        }
    }

    /// The backing name of `name` in `dir`. `creating`: the entry is about to be made, so a
    /// long name's full encoding is stored first (idempotent, content-addressed).
    func backingName(_ dir: Node, _ name: String, creating: Bool) throws(FSError) -> String {
        guard name.utf8.count <= NameCodec.maxNameLength else { throw .name(.tooLong) }
        let codec = try self.codec()
        let id = try directoryID(dir)
        // After the lease answered: a revoked name key stops this as it stops `encrypt`.
        if let known = keyedCodec.withLock({ $0?.recent.find(id, name) }) { return known }
        let encrypted: NameCodec.Encrypted
        do { encrypted = try codec.encrypt(name, directoryID: id) } catch { throw .name(error) }
        noteRecent(id, name, backingName: encrypted.backingName)
        if creating, let full = encrypted.fullName, let hash = encrypted.hash {
            do { try volume.metadata.setLongName(hash: hash, name: full) } catch {
                FileSystem.logger.error("cannot store a long name: \(error)")
                throw .metadata(error)
            }
        }
        return encrypted.backingName
    }

    /// Keeps `backingName` as the encryption of `name` in the directory with id `id`, while
    /// the codec is held: never after the name key's cut dropped it (`dropKeyedCodec`).
    func noteRecent(_ id: [UInt8], _ name: String, backingName: String) {
        keyedCodec.withLock { $0?.recent.note(id, name, backingName: backingName) }
    }

    /// `noteRecent` for a directory listing just decrypted: (plaintext, backing) names.
    func noteRecent<Listing: Sequence>(_ id: [UInt8], listing: Listing) where Listing.Element == (name: String, backingName: String) {
        keyedCodec.withLock { keyed in
            for entry in listing { keyed?.recent.note(id, entry.name, backingName: entry.backingName) }
        }
    }

    /// The entry `name` of `dir` is gone: its backing name need not be kept.
    func entryGone(_ dir: Node, _ name: String) {
        guard let id = dir.inode.directoryID else { return }
        keyedCodec.withLock { $0?.recent.drop(id, name) }
    }

    /// How many backing names are kept now (tests: `RecentNames` follows the name key).
    var recentNameCount: Int { keyedCodec.withLock { $0?.recent.count ?? 0 } }

    /// Drops the stored encoding of a long backing name whose entry is gone.
    func forget(_ backingName: String) {
        guard let hash = NameCodec.hash(ofLong: backingName) else { return }
        do { try volume.metadata.deleteLongName(hash: hash) } catch {
            FileSystem.logger.warning("a removed long name's row stays behind (an orphan for fsck): \(error)")
        }
    }

    /// What the backing symlink for `plain` holds: its encoding, or for a long one the long
    /// form, whose encoding is stored in meta.db first.
    func storedTarget(_ plain: String) throws(FSError) -> String {
        let codec = try self.codec()
        let encrypted: NameCodec.Encrypted
        do { encrypted = try codec.encryptTarget(plain) } catch { throw .name(error) }
        if let full = encrypted.fullName, let hash = encrypted.hash {
            do { try volume.metadata.setLongName(hash: hash, name: full) } catch {
                FileSystem.logger.error("cannot store a long symlink target: \(error)")
                throw .metadata(error)
            }
        }
        return encrypted.backingName
    }

    /// The plaintext of a backing symlink's target (a long one through its meta.db row);
    /// `.corrupt` when it does not decrypt or its row is missing.
    func plainTarget(_ stored: String) throws(FSError) -> String {
        let codec = try self.codec()
        var encoding = stored
        if let hash = NameCodec.hash(ofLong: stored) {
            guard let full = try? volume.metadata.longName(hash: hash), (try? NameCodec.longHash(full)) == hash else {
                throw .corrupt("the long symlink target \(stored) has no valid row in meta.db")
            }
            encoding = full
        }
        do { return try codec.decryptTarget(encoding) } catch {
            throw .corrupt("the symlink target \(stored) does not decrypt: \(error)")
        }
    }

    /// Drops the stored encoding of a long symlink target whose symlink is gone.
    func forgetTarget(_ stored: String) { forget(stored) }

    /// A directory was removed or renamed: cached paths may be wrong now.
    func directoriesChanged() { directories.withLock { $0.removeAll() } }

    /// The codec if the name key is held now; nil (and no provider call) when it is not.
    private func heldCodec() -> NameCodec? {
        guard let current = lease.withLock({ $0 }), case .success(let key) = current.key(now: monotonicNow()) else { return nil }
        return try? makeCodec(key, for: current)
    }

    /// The mount path of a backing path relative to data/ ("" is the root), decrypting each
    /// component; directories on the way are cached. nil when a component does not decrypt, or
    /// when the name key is not held: an audit path never asks the provider on a request's reply
    /// path (a key miss leases the name key again in the background, `leaseAgainAfterKeyMiss`).
    func mountPath(ofBacking rel: String) -> String? {
        guard let codec = heldCodec() else { return nil }
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
        guard let fd = try? FileDescriptor.open(volume.dataPath + (rel.isEmpty ? "" : "/" + rel), O_RDONLY | O_DIRECTORY | O_CLOEXEC),
              let id = try? DirectoryID.read(directoryFD: fd.rawValue) else { return nil }
        directories.withLock { d in
            if d.count >= Self.maxCachedDirectories { d.removeAll() }
            d[rel] = (plain, id)
        }
        return (plain, id)
    }

    /// The backing path (relative to data/) of a mount path, walking from `rootFD`: each
    /// directory's id is read on the way. For control requests (rekey), not for FUSE traffic.
    /// A name key that cannot be had is answered EACCES, whatever the reason: the requester
    /// learns that the volume's names are closed to it, not why.
    func backingPath(ofMount path: String, rootFD: Int32) throws(FSError) -> String {
        guard let codec = try? codec() else { throw .posix(EACCES) }
        let components = path.split(separator: "/").map(String.init)
        var out: [String] = []
        var dir: FileDescriptor
        do { dir = try Descriptor(rawValue: rootFD).duplicate() } catch { throw .system(error) }
        for (i, name) in components.enumerated() {
            let id: [UInt8]
            do { id = try DirectoryID.read(directoryFD: dir.rawValue) } catch { throw .corrupt("\(path): \(error)") }
            // Any name that does not encrypt is not a path in the volume.
            guard let encrypted = try? codec.encrypt(name, directoryID: id) else { throw .posix(EINVAL) }
            out.append(encrypted.backingName)
            if i < components.count - 1 {
                do { dir = try dir.descriptor.openat(encrypted.backingName, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) } catch {
                    throw .system(error)
                }
            }
        }
        return out.joined(separator: "/")
    }
}
