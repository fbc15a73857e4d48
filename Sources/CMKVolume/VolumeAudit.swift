import Foundation
import Glibc
import CMKAudit
import CMKCrypto
import CMKKeys
import CMKFormat
import CMKMetadata
import CMKSystem

/// The volume's audit key and audit log (docs/audit-format.md).
///
/// The audit key is 32 random bytes wrapped by the volume's key provider, like a DEK, under the
/// active master key with its own wrap context (file id = 16 bytes of 0xA0, which no random file
/// id takes in practice and which differs from the key check's zeros). It is kept in `meta.db`
/// (`meta['audit_key']`, `meta['audit_key_version']`), so whoever holds the volume but not the
/// provider cannot recompute a record's MAC.
extension Volume {
    static let auditKeyName = "audit_key"
    static let auditKeyVersionName = "audit_key_version"
    static let auditCheckpointName = "audit_checkpoint"
    static let auditKeyFileID = [UInt8](repeating: 0xA0, count: 16)

    /// `VOLUME/audit`: the log's segments and `writer.lock`.
    public var auditPath: String { path + "/audit" }

    /// The audit key, unwrapped by the provider; made and stored first if the volume has none
    /// (a volume made before the audit log existed).
    public func auditKey() throws(CMKError) -> SecretBytes {
        try Self.auditKey(metadata: metadata, provider: provider, volumeID: volumeID, activeKey: activeKey,
                          path: path, providerConfig: config.provider, request: keyRequest())
    }

    static func auditKey(metadata: any VolumeFactStore & KeyVersionStore & MetadataMaintenance, provider: any KeyProvider, volumeID: [UInt8], activeKey: KeyRef?,
                         path: String, providerConfig: ProviderConfig,
                         request: KeyRequest = .ownProcess("audit")) throws(CMKError) -> SecretBytes {
        let context = WrapContext(volumeID: volumeID, fileID: auditKeyFileID, request: request)
        do {
            if let edek = try metadata.meta(auditKeyName), let raw = try metadata.meta(auditKeyVersionName),
               let version = Int(String(decoding: raw, as: UTF8.self)) {
                let ref = try masterKey(version: version, in: metadata, fallback: providerConfig.keyID)
                do { return try provider.unwrap(edek, with: ref, context: context) } catch {
                    // Which is wrong, the row or the keystore? The key check tells: if it unwraps,
                    // the master key is the volume's own and the row is bad.
                    guard case .unwrapFailed = error, let check = try metadata.meta(Volume.keyCheckName),
                          (try? provider.unwrap(check, with: try masterKey(version: try Volume.keyCheckVersion(metadata), in: metadata,
                                                                           fallback: providerConfig.keyID),
                                                context: WrapContext(volumeID: volumeID, fileID: Volume.keyCheckFileID, request: request))) != nil else { throw error }
                    throw CMKError(.auditNotIntact,
                                   "the audit key row meta['\(auditKeyName)'] in \(path)/meta.db does not unwrap under master key \(ref), "
                                   + "although that master key passes the volume's key check: the row is damaged or was replaced",
                                   hint: "restore VOLUME/meta.db (or its audit_key row) from a backup of the volume; the keystore is not at fault")
                }
            }
            guard let activeKey else {
                throw CMKError(.notAVolume, "the metadata database of \(path) has no audit key")
            }
            let key = try SecretBytes.random(count: 32)
            let edek = try provider.wrap(key, with: activeKey, context: context)
            try metadata.setMeta(auditKeyName, edek)
            try metadata.setMeta(auditKeyVersionName, Array(String(activeKey.version).utf8))
            try metadata.makeDurable()
            return key
        } catch {
            throw .wrapping(error, volume: path, config: providerConfig, doing: "cannot make the audit key")
        }
    }

    /// Opens the log for writing (the mount, whose records name its `mountpoint`, or a command
    /// on an unmounted volume).
    public func openAuditLog(lockWait: Double = 10, mountpoint: String? = nil,
                             onFailure: @escaping @Sendable (AuditError) -> Void = { _ in }) throws(CMKError) -> AuditLog {
        let key = try auditKey()
        do {
            let log = try AuditLog.open(directory: auditPath, key: key, volumeID: hex(volumeID),
                                        checkpoints: MetadataCheckpoints(store: metadata), anchor: anchorStore,
                                        lockWait: lockWait, mountpoint: mountpoint, onFailure: onFailure)
            try PendingDenials.ingest(into: log, directory: auditPath, key: DenialKey.load(volumeID: volumeID))
            return log
        } catch {
            throw CMKError(error)
        }
    }

    /// The anchor of the head outside the volume, if the provider keeps one.
    var anchorStore: ProviderAnchor? { ProviderAnchor(provider: provider, volumeID: volumeID) }

    /// What `audit verify` compares the log with: the provider's anchor (nil: this provider keeps
    /// none). Throws when the provider cannot answer.
    public func auditAnchor() throws(CMKError) -> AuditAnchorCheck? {
        guard let place = provider.anchorPlace(volumeID: volumeID) else { return nil }
        do { return AuditAnchorCheck(bytes: try provider.auditAnchor(volumeID: volumeID), place: place) } catch {
            throw .provider(error, volume: path, config: config.provider)
        }
    }

    /// Notes a denial that happened before the audit log could be opened (wrong PIN, disabled
    /// key, provider down): kept in `audit/denials.pending` and chained by the next opener.
    /// Only key failures count; other errors (usage, mountpoint) are not key events.
    public static func notePendingDenial(volume: String, event: String, error: CMKError, detail: String? = nil) {
        guard error.code == .keyUnavailable else { return }
        let lower = error.message.lowercased()
        let outage = ["unreachable", "not answering", "unavailable", "timed out", "timeout", "does not exist", "cannot"].contains { lower.contains($0) }
        guard let config = try? readConfig(absolute(volume)), let volumeID = unhex(config.volumeID),
              let key = DenialKey.loadOrCreate(volumeID: volumeID) else { return }
        PendingDenials.record(.command(event, result: outage ? "error" : "denied", error: error.message, keyID: config.provider.keyID,
                                       detail: detail),
                              directory: absolute(volume) + "/audit", key: key)
    }

    /// The log held open by a command working on this (unmounted) volume, e.g. an offline rekey.
    public func openCommandAuditLog() throws(CMKError) -> CommandAuditLog {
        CommandAuditLog(log: try openAuditLog(lockWait: 5), ownedStore: nil)
    }

    /// The stored checkpoint (nil before the first sync).
    public func auditCheckpoint() throws(CMKError) -> [UInt8]? {
        do { return try metadata.meta(Self.auditCheckpointName) } catch { throw .metadata(error, volume: path) }
    }
}

extension CMKError {
    /// An audit log failure as a command reports it.
    public init(_ error: AuditError) {
        switch error.kind {
        case .busy: self.init(.io, error.message, hint: error.hint)
        case .full: self.init(.io, error.message, hint: error.hint ?? "free space on the volume's filesystem")
        case .io: self.init(.io, error.message, hint: error.hint ?? "check the volume's audit/ directory")
        case .key: self.init(.keyUnavailable, error.message, hint: error.hint)
        case .malformed: self.init(.auditNotIntact, error.message, hint: error.hint ?? "run: cmkfs audit verify VOLUME")
        }
    }
}

/// The key provider as the keeper of a volume's audit anchor.
struct ProviderAnchor: AuditAnchorStore {
    let provider: any KeyProvider
    let volumeID: [UInt8]
    let place: String

    init?(provider: any KeyProvider, volumeID: [UInt8]) {
        guard let place = provider.anchorPlace(volumeID: volumeID) else { return nil }
        self.provider = provider
        self.volumeID = volumeID
        self.place = place
    }

    func loadAnchor() throws -> [UInt8]? { try provider.auditAnchor(volumeID: volumeID) }
    func saveAnchor(_ bytes: [UInt8], seq: UInt64) throws { try provider.setAuditAnchor(bytes, seq: seq, volumeID: volumeID) }
}

/// The key that MACs a volume's pending denials (docs/audit-format.md): 32 random bytes in
/// `STATE/denial-keys/<volume id>.key` (0600, directory 0700), where STATE is
/// `$CMKFS_STATE_DIR` or `/var/lib/cmkfs` — on the host, outside the volume. It needs no master
/// key (a denial happens when the master key cannot be had), and whoever holds only the volume
/// cannot forge a pending line; root on this host can (it holds the file).
public enum DenialKey {
    static var directory: String {
        (ProcessInfo.processInfo.environment["CMKFS_STATE_DIR"] ?? "/var/lib/cmkfs") + "/denial-keys"
    }

    public static func path(volumeID: [UInt8]) -> String { directory + "/" + hex(volumeID) + ".key" }

    /// The key, or nil when this host has none for the volume (or it is not 32 bytes).
    public static func load(volumeID: [UInt8]) -> SecretBytes? {
        guard let file = try? FileDescriptor.open(path(volumeID: volumeID), O_RDONLY | O_CLOEXEC | O_NOFOLLOW) else { return nil }
        let key = SecretBytes(zeroedCount: 32)
        let n = key.withUnsafeMutableBytes { (try? file.descriptor.read(into: $0)) ?? -1 }
        return n == 32 ? key : nil
    }

    /// The key, made (O_EXCL, so two processes agree on one) if this host has none yet.
    static func loadOrCreate(volumeID: [UInt8]) -> SecretBytes? {
        if let key = load(volumeID: volumeID) { return key }
        var prefix = ""
        for component in directory.split(separator: "/") {
            prefix += "/" + component
            try? Descriptor.cwd.mkdir(prefix, mode: 0o700)
        }
        guard let key = try? SecretBytes.random(count: 32) else { return nil }
        guard let file = try? FileDescriptor.open(path(volumeID: volumeID), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode: 0o600)
        else { return load(volumeID: volumeID) }
        let n = key.withUnsafeBytes { (try? file.descriptor.write($0)) ?? -1 }
        try? file.descriptor.fsync()
        return n == 32 ? key : nil
    }
}

/// Checkpoints in `meta['audit_checkpoint']`, made durable at once (they are written at most
/// once per group-commit interval): a commit, then a sync of meta.db's WAL outside the
/// store's lock (`makeDurable`), never a copy of the WAL into meta.db under it.
struct MetadataCheckpoints: AuditCheckpointStore {
    let store: any VolumeFactStore & MetadataMaintenance
    func loadCheckpoint() throws -> [UInt8]? { try store.meta(Volume.auditCheckpointName) }
    func saveCheckpoint(_ bytes: [UInt8]) throws {
        try store.setMeta(Volume.auditCheckpointName, bytes)
        try store.makeDurable()
    }
    /// meta.db's checkpoint, when the mount deferred them to this thread (`deferCheckpoints`).
    func groupCommitTick() throws { try store.checkpointIfDue() }
}

extension AuditEvent {
    /// An event by this process (a cmkfs command): its uid, gid, pid, name, login uid and users.
    public static func command(_ event: String, result: String = "ok", error: String? = nil, keyID: String? = nil,
                               keyVersion: Int? = nil, detail: String? = nil) -> AuditEvent {
        AuditEvent(event, result: result, error: error, keyID: keyID, keyVersion: keyVersion,
                   uid: Int(getuid()), gid: Int(getgid()), pid: Int(getpid()), process: processName(getpid()), detail: detail)
            .naming(loginUID: processLoginUID(getpid()))
    }

    /// The event with the caller's login uid and the user names of it and of `uid` filled in
    /// (names from `UserNames.shared`).
    public func naming(loginUID: UInt32?) -> AuditEvent {
        var e = self
        e.name(loginUID: loginUID)
        return e
    }

    /// `naming(loginUID:)` in place (the FUSE layer's records: no copy of the event per open).
    public mutating func name(loginUID: UInt32?) {
        self.loginUID = loginUID
        user = uid.flatMap { UserNames.shared.name(of: UInt32(truncatingIfNeeded: $0)) }
        loginUser = loginUID.flatMap { $0 == AuditEvent.unsetLoginUID ? nil : UserNames.shared.name(of: $0) }
    }
}

/// `/proc/PID/comm` without its newline, or nil when the process is gone.
public func processName(_ pid: pid_t) -> String? {
    guard let file = try? FileDescriptor.open("/proc/\(pid)/comm", O_RDONLY | O_CLOEXEC),
          var bytes = try? file.descriptor.read(upTo: 64)[...], !bytes.isEmpty else { return nil }
    if bytes.last == 0x0A { bytes = bytes.dropLast() }
    return String(decoding: bytes, as: UTF8.self)
}
