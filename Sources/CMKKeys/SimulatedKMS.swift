import Foundation
import Glibc
import Synchronization
import CMKCrypto
import CMKSystem

/// The simulated customer KMS: master keys with versions in a keystore directory of its own
/// (never inside a volume), wrap/unwrap with AES-256-GCM, and disable/enable/destroy.
///
/// Embedded in the `cmkfs` process by default; a later `cmkfs-kms` serves the same type over a
/// socket. Several processes may share one directory: writes take an exclusive `flock` and
/// replace the file atomically; reads re-load a key file when its inode or mtime changed, so a
/// key disabled by another process is refused here on the next call.
public final class SimulatedKMS: KeyProvider {
    public var kind: String { "embedded" }
    /// The keystore directory.
    public let directory: String

    private struct Loaded {
        var identity: FileIdentity
        var file: KeystoreFile
    }
    private struct FileIdentity: Equatable {
        var inode: UInt
        var mtimeSec: Int
        var mtimeNsec: Int
        var size: Int
    }
    /// Key files loaded so far, by key id, *without their key material*: states and versions
    /// only, for `state(of:)`. A wrap or unwrap reads the material from the file for that one
    /// call, so no master key stays in this process between calls (docs/threat-model.md).
    /// Guarded by the mutex, never held across file I/O other than a `stat`.
    private let loaded = Mutex<[String: Loaded]>([:])
    /// A descriptor on each key file a wrap or unwrap read, by key id, with the inode it names:
    /// the next call `stat`s the path and, while it still names that inode, `pread`s the file
    /// through it (two system calls where an open, fstat, read and close took four per key-miss
    /// open). A replaced file (every change is a rename over it, `writeAtomically`) has another
    /// inode and is opened afresh, so a key disabled by another process is refused on the next
    /// call as before. Only the descriptor is kept, never the material. Owned by hand: closed
    /// when replaced and in `deinit`; read and closed only under this mutex, so no call reads a
    /// descriptor another has closed.
    private let held = Mutex<[String: HeldFile]>([:])
    private struct HeldFile {
        var fd: Int32
        var device: UInt
        var inode: UInt
    }

    /// The default keystore location when running as root.
    public static let defaultDirectory = "/var/lib/cmkfs/kms"

    /// Opens the keystore at `directory`; with `create`, makes it (mode 0700) if missing.
    public init(directory: String, create: Bool) throws(KeyProviderError) {
        self.directory = directory
        if let st = try? Descriptor.cwd.stat(directory) {
            guard (st.st_mode & S_IFMT) == S_IFDIR else {
                throw .unavailable("the KMS keystore path \(directory) is not a directory")
            }
        } else {
            guard create else {
                throw .unavailable("the KMS keystore directory \(directory) does not exist")
            }
            try Self.makeDirectories(directory)
        }
    }

    deinit {
        held.withLock { files in
            for file in files.values { try? FileDescriptor(adopting: file.fd).close() }
        }
    }

    public func createKey() throws(KeyProviderError) -> KeyRef {
        let keyID = "mk-" + hexString(try random(8))
        return try update(keyID, mustExist: false) { file throws(KeyProviderError) in
            file.versions.append(.init(number: 1, state: .enabled, createdAt: now(), material: try randomKey()))
            return KeyRef(keyID: keyID, version: 1)
        }
    }

    public func createVersion(of keyID: String) throws(KeyProviderError) -> KeyRef {
        try update(keyID, mustExist: true) { file throws(KeyProviderError) in
            let next = (file.versions.map(\.number).max() ?? 0) + 1
            file.versions.append(.init(number: next, state: .enabled, createdAt: now(), material: try randomKey()))
            return KeyRef(keyID: keyID, version: next)
        }
    }

    public func wrap(_ dek: SecretBytes, with key: KeyRef, context: WrapContext) throws(KeyProviderError) -> [UInt8] {
        let material = try usableMaterial(key)
        let cipher = AESGCM()
        do {
            return try material.withUnsafeBytes { k throws(CryptoError) in
                try dek.withUnsafeBytes { d throws(CryptoError) in
                    try cipher.sealRecord(key: k, aad: context.associatedData(for: key), plaintext: d)
                }
            }
        } catch {
            throw .unavailable("wrap failed: \(error)")
        }
    }

    public func unwrap(_ edek: [UInt8], with key: KeyRef, context: WrapContext) throws(KeyProviderError) -> SecretBytes {
        let material = try usableMaterial(key)
        let cipher = AESGCM()
        do {
            return try material.withUnsafeBytes { k throws(CryptoError) in
                try cipher.openRecord(key: k, aad: context.associatedData(for: key), record: edek)
            }
        } catch {
            throw .unwrapFailed(key)
        }
    }

    public func state(of key: KeyRef) throws(KeyProviderError) -> ProviderKeyState {
        try version(key).state
    }

    public func setState(_ state: ProviderKeyState, of key: KeyRef) throws(KeyProviderError) {
        try update(key.keyID, mustExist: true) { file throws(KeyProviderError) in
            guard let i = file.versions.firstIndex(where: { $0.number == key.version }) else {
                throw .keyNotFound(key, detail: "no such version in \(path(key.keyID))")
            }
            if file.versions[i].state == .destroyed && state != .destroyed { throw .keyDestroyed(key) }
            file.versions[i].state = state
            if state == .destroyed { file.versions[i].material = nil }
        }
    }

    /// One master key and the state of each of its versions, as `cmkfs-kms key list` shows them.
    public struct Listing: Sendable, Equatable {
        public var keyID: String
        public var versions: [(version: Int, state: ProviderKeyState)]
        public static func == (a: Listing, b: Listing) -> Bool {
            a.keyID == b.keyID && a.versions.map(\.version) == b.versions.map(\.version) && a.versions.map(\.state) == b.versions.map(\.state)
        }
    }

    /// Every key in the keystore, sorted by id (never any key material).
    public func listKeys() throws(KeyProviderError) -> [Listing] {
        let names: [String]
        do { names = try FileManager.default.contentsOfDirectory(atPath: directory) } catch {
            throw .unavailable("cannot list the KMS keystore \(directory): \(error.localizedDescription)")
        }
        var out: [Listing] = []
        for name in names.sorted() where name.hasSuffix(".key") {
            let keyID = String(name.dropLast(4))
            let file = try load(keyID)
            out.append(Listing(keyID: keyID, versions: file.versions.map { ($0.number, $0.state) }))
        }
        return out
    }

    // MARK: audit anchors

    /// Anchors live in `KEYSTORE/audit-anchors/<volume id>.anchor` (0600): outside the volume,
    /// with the master keys. The bytes are MACed by the writer under the audit key.
    private func anchorPath(_ volumeID: [UInt8]) -> String { "\(directory)/audit-anchors/\(hexString(volumeID)).anchor" }

    public func anchorPlace(volumeID: [UInt8]) -> String? { "the keystore directory \(directory)" }

    public func auditAnchor(volumeID: [UInt8]) throws(KeyProviderError) -> [UInt8]? {
        let p = anchorPath(volumeID)
        guard (try? Descriptor.cwd.access(p, mode: F_OK)) != nil else { return nil }
        guard let data = FileManager.default.contents(atPath: p) else {
            throw .unavailable("cannot read the audit anchor \(p): \(String(cString: strerror(errno)))")
        }
        guard let record = AnchorRecord.decode([UInt8](data)) else { throw .corrupt("\(p) is not an audit anchor") }
        return record.anchor
    }

    /// Replaces the anchor under the keystore's lock, refusing a lower seq than the stored one.
    public func setAuditAnchor(_ anchor: [UInt8], seq: UInt64, volumeID: [UInt8]) throws(KeyProviderError) {
        let lock = try lockKeystore()
        defer { try? lock.descriptor.lock(LOCK_UN) }
        let dir = directory + "/audit-anchors"
        do { try Descriptor.cwd.mkdir(dir, mode: 0o700) } catch {
            if error.errno != .EEXIST { throw .unavailable("cannot create \(dir): \(error.errno)") }
        }
        let p = anchorPath(volumeID)
        if let data = FileManager.default.contents(atPath: p), let stored = AnchorRecord.decode([UInt8](data)), stored.seq > seq {
            throw .unavailable("refusing to move the audit anchor \(p) back from seq \(stored.seq) to \(seq) (a rollback)")
        }
        let bytes = AnchorRecord.encode(anchor, seq: seq)
        let tmp = p + ".tmp"
        let file: FileDescriptor
        do { file = try FileDescriptor.open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode: 0o600) } catch {
            throw .unavailable("cannot write \(tmp): \(error.errno)")
        }
        do {
            try file.descriptor.writeAll(bytes)
            try file.descriptor.fsync()
            try Descriptor.cwd.rename(tmp, to: p, in: .cwd)
        } catch {
            try? Descriptor.cwd.unlink(tmp)
            throw .unavailable("cannot write the audit anchor \(p): \(error.errno)")
        }
        Self.syncDirectory(dir)
    }

    // MARK: private

    private func path(_ keyID: String) -> String {
        // Concatenated into one reserved string: interpolation cost more than the check before it.
        var p = String()
        p.reserveCapacity(directory.utf8.count + keyID.utf8.count + 5)
        p += directory
        p += "/"
        p += keyID
        p += ".key"
        return p
    }

    /// The master key's bytes, read from its file for one wrap or unwrap (never cached). Only
    /// that version's material is copied out of the read buffer; a missing file is told by the
    /// open's ENOENT rather than an `access` before it (one system call and one parse less per
    /// key-miss open, issue 20).
    private func usableMaterial(_ key: KeyRef) throws(KeyProviderError) -> SecretBytes {
        guard isSafeKeyID(key.keyID) else { throw .keyNotFound(key, detail: "malformed key id") }
        let p = path(key.keyID)
        let file = try readHeld(key.keyID, p, missing: key, materialOf: { $0 == key.version })
        guard let v = file.versions.first(where: { $0.number == key.version }) else {
            throw .keyNotFound(key, detail: "\(p) has no version \(key.version)")
        }
        switch v.state {
        case .disabled: throw .keyDisabled(key)
        case .destroyed: throw .keyDestroyed(key)
        case .enabled:
            guard let material = v.material else { throw .keyDestroyed(key) }
            return material
        }
    }

    private func version(_ key: KeyRef) throws(KeyProviderError) -> KeystoreFile.Version {
        let file = try load(key.keyID)
        guard let v = file.versions.first(where: { $0.number == key.version }) else {
            throw .keyNotFound(key, detail: "\(path(key.keyID)) has no version \(key.version)")
        }
        return v
    }

    /// The current content of a key file, re-read only when the file changed on disk.
    private func load(_ keyID: String) throws(KeyProviderError) -> KeystoreFile {
        guard isSafeKeyID(keyID) else { throw .keyNotFound(KeyRef(keyID: keyID, version: 0), detail: "malformed key id") }
        let p = path(keyID)
        guard let st = try? Descriptor.cwd.stat(p) else {
            throw .keyNotFound(KeyRef(keyID: keyID, version: 1), detail: "\(p) does not exist")
        }
        let identity = FileIdentity(inode: UInt(st.st_ino), mtimeSec: st.st_mtim.tv_sec, mtimeNsec: st.st_mtim.tv_nsec, size: Int(st.st_size))
        if let cached = loaded.withLock({ $0[keyID] }), cached.identity == identity { return cached.file }
        let file = try readFile(p, materialOf: { _ in false })
        loaded.withLock { $0[keyID] = Loaded(identity: identity, file: file) }
        return file
    }

    /// `readFile` of key `keyID`'s file `p` through the descriptor held on it (`held`) while
    /// `p` still names the inode it was opened on; otherwise opened (and held) afresh.
    private func readHeld(_ keyID: String, _ p: String, missing: KeyRef,
                          materialOf: (Int) -> Bool) throws(KeyProviderError) -> KeystoreFile {
        let st: stat
        do { st = try Descriptor.cwd.stat(p) } catch {
            if error.errno == .ENOENT || error.errno == .ENOTDIR { throw .keyNotFound(missing, detail: "\(p) does not exist") }
            throw .unavailable("cannot stat \(p): \(error.errno)")
        }
        let size = Int(st.st_size)
        guard (st.st_mode & S_IFMT) == S_IFREG, size > 0 && size < 1 << 20 else { throw .corrupt("\(p): implausible size \(size)") }
        return try held.withLock { files throws(KeyProviderError) -> KeystoreFile in
            if let file = files[keyID], file.device == UInt(st.st_dev), file.inode == UInt(st.st_ino) {
                return try Self.read(Descriptor(rawValue: file.fd), size: size, p, materialOf: materialOf)
            }
            if let stale = files.removeValue(forKey: keyID) { try? FileDescriptor(adopting: stale.fd).close() }
            let opened: FileDescriptor
            do throws(SystemError) { opened = try FileDescriptor.open(p, O_RDONLY | O_CLOEXEC) } catch {
                if error.errno == .ENOENT || error.errno == .ENOTDIR { throw .keyNotFound(missing, detail: "\(p) does not exist") }
                throw .unavailable("cannot open \(p): \(error.errno)")
            }
            let own: stat
            do throws(SystemError) { own = try opened.descriptor.fstat() } catch { throw .unavailable("cannot stat \(p): \(error.errno)") }
            let file = try Self.read(opened.descriptor, size: Int(own.st_size), p, materialOf: materialOf)
            files[keyID] = HeldFile(fd: opened.release(), device: UInt(own.st_dev), inode: UInt(own.st_ino))
            return file
        }
    }

    /// The `size` bytes of the key file open at `fd`, parsed. They are read into `SecretBytes`
    /// (pages excluded from core dumps, wiped when released) like the material parsed out of them:
    /// the file holds every version's master key.
    private static func read(_ fd: Descriptor, size: Int, _ p: String,
                             materialOf: (Int) -> Bool) throws(KeyProviderError) -> KeystoreFile {
        guard size > 0 && size < 1 << 20 else { throw .corrupt("\(p): implausible size \(size)") }
        let buffer = SecretBytes(zeroedCount: size)
        return try buffer.withUnsafeMutableBytes { (bytes) throws(KeyProviderError) -> KeystoreFile in
            let n = (try? fd.preadFully(into: bytes, at: 0)) ?? -1
            guard n == size else { throw .corrupt("\(p): short read") }
            return try KeystoreFile.parse(UnsafeRawBufferPointer(bytes), path: p, materialOf: materialOf)
        }
    }

    /// The key file at `p`, with the material of the versions `materialOf` picks (the others
    /// nil). A file that does not exist is `.keyNotFound(missing)` when `missing` is given.
    private func readFile(_ p: String, missing: KeyRef? = nil,
                          materialOf: (Int) -> Bool = { _ in true }) throws(KeyProviderError) -> KeystoreFile {
        let file: FileDescriptor
        do { file = try FileDescriptor.open(p, O_RDONLY | O_CLOEXEC) } catch {
            if let missing, error.errno == .ENOENT || error.errno == .ENOTDIR { throw .keyNotFound(missing, detail: "\(p) does not exist") }
            throw .unavailable("cannot open \(p): \(error.errno)")
        }
        let st: stat
        do { st = try file.descriptor.fstat() } catch { throw .unavailable("cannot stat \(p): \(error.errno)") }
        let size = Int(st.st_size)
        guard size > 0 && size < 1 << 20 else { throw .corrupt("\(p): implausible size \(size)") }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 16)
        defer { secureZero(buffer); buffer.deallocate() }
        var done = 0
        while done < size {
            let n = (try? file.descriptor.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[done...]))) ?? -1
            guard n > 0 else { throw .corrupt("\(p): short read") }
            done += n
        }
        return try KeystoreFile.parse(UnsafeRawBufferPointer(buffer), path: p, materialOf: materialOf)
    }

    /// Read-modify-write of one key file under the directory's exclusive lock.
    private func update<R>(_ keyID: String, mustExist: Bool,
                           _ body: (inout KeystoreFile) throws(KeyProviderError) -> R) throws(KeyProviderError) -> R {
        // The key id becomes a path: refuse "/" and ".." here too, not only in `load`.
        guard isSafeKeyID(keyID) else { throw .keyNotFound(KeyRef(keyID: keyID, version: 0), detail: "malformed key id") }
        let lock = try lockKeystore()
        defer { try? lock.descriptor.lock(LOCK_UN) }
        let p = path(keyID)
        var file = KeystoreFile()
        if (try? Descriptor.cwd.access(p, mode: F_OK)) != nil {
            guard mustExist else { throw .corrupt("\(p) already exists") }
            file = try readFile(p)
        } else if mustExist {
            throw .keyNotFound(KeyRef(keyID: keyID, version: 1), detail: "\(p) does not exist")
        }
        let result = try body(&file)
        try writeAtomically(file, to: p)
        loaded.withLock { $0[keyID] = nil }
        return result
    }

    private func writeAtomically(_ file: KeystoreFile, to p: String) throws(KeyProviderError) {
        let bytes = file.serialize()
        defer { secureZero(bytes); bytes.deallocate() }
        let tmp = p + ".tmp"
        do {
            let file = try FileDescriptor.open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode: 0o600)
            do { try file.descriptor.writeAll(UnsafeRawBufferPointer(bytes)) } catch {
                try? Descriptor.cwd.unlink(tmp)
                throw error
            }
            do { try file.descriptor.fsync() } catch {
                try? Descriptor.cwd.unlink(tmp)
                throw KeyProviderError.unavailable("cannot sync \(tmp): \(error.errno)")
            }
        } catch let error as SystemError {
            throw .unavailable("cannot write \(tmp): \(error.errno)")
        } catch let error as KeyProviderError { throw error } catch { throw .unavailable("cannot write \(tmp): \(error)") }
        do { try Descriptor.cwd.rename(tmp, to: p, in: .cwd) } catch { throw .unavailable("cannot replace \(p): \(error.errno)") }
        Self.syncDirectory(directory)
    }

    /// The keystore's lock file, flock'ed exclusively until the caller drops it.
    private func lockKeystore() throws(KeyProviderError) -> FileDescriptor {
        let lock: FileDescriptor
        do { lock = try FileDescriptor.open("\(directory)/.lock", O_RDWR | O_CREAT | O_CLOEXEC, mode: 0o600) } catch {
            throw .unavailable("cannot lock the keystore \(directory): \(error.errno)")
        }
        try? lock.descriptor.lock(LOCK_EX)
        return lock
    }

    /// fsync of a directory, so a rename in it survives a power cut; best effort.
    private static func syncDirectory(_ path: String) {
        if let directory = try? FileDescriptor.open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC) { try? directory.descriptor.fsync() }
    }

    private static func makeDirectories(_ path: String) throws(KeyProviderError) {
        var prefix = path.hasPrefix("/") ? "" : "."
        for component in path.split(separator: "/") {
            prefix += "/" + component
            do { try Descriptor.cwd.mkdir(prefix, mode: 0o700) } catch {
                if error.errno != .EEXIST { throw .unavailable("cannot create the KMS keystore directory \(prefix): \(error.errno)") }
            }
        }
        try? Descriptor.cwd.chmod(path, mode: 0o700)
    }
}

private func random(_ count: Int) throws(KeyProviderError) -> [UInt8] {
    do { return try SecureRandom.bytes(count) } catch { throw .unavailable("random number generator failed") }
}

private func randomKey() throws(KeyProviderError) -> SecretBytes {
    do { return try SecretBytes.random(count: 32) } catch { throw .unavailable("random number generator failed") }
}

private func now() -> UInt64 { UInt64(time(nil)) }

private func hexString(_ bytes: [UInt8]) -> String {
    bytes.map { b in String(b, radix: 16).count == 1 ? "0" + String(b, radix: 16) : String(b, radix: 16) }.joined()
}

/// Key ids become file names: letters, digits, '-' and '_' only. (Checked on every wrap and
/// unwrap: a loop over the contiguous UTF-8, where `utf8.allSatisfy` went through the string's
/// generic view per character.)
private func isSafeKeyID(_ id: String) -> Bool {
    var id = id
    return id.withUTF8 { bytes in
        guard !bytes.isEmpty, bytes.count <= 64 else { return false }
        for c in bytes {
            guard (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || c == 0x2D || c == 0x5F else {
                return false
            }
        }
        return true
    }
}
