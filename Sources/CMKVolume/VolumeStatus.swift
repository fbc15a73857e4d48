import CMKCrypto
import CMKKeys
import CMKMetadata

/// What `cmkfs status` reports. Built without unwrapping anything, so it works while the key
/// provider is down (and says so).
public struct VolumeStatus: Codable, Sendable {
    /// The version of this JSON shape (docs/json.md). Not `format`: that field was already the
    /// volume's on-disk format when the shapes were versioned.
    public var jsonFormat = 1
    public var volume: String
    public var volumeID: String
    public var format: Int
    public var blockSize: Int
    public var names: String
    public var provider: ProviderConfig
    public var activeKeyVersion: Int?
    public var keyVersions: [Version]
    public var fileCount: Int
    public var mounted: Bool
    public var mountpoint: String?
    public var mountPID: Int32?
    /// "ok", or why the master key cannot be used now.
    public var keyCheck: String
    /// The same as a stable word: `ok`, `disabled`, `wrong-key`, `missing`, `destroyed`,
    /// `unreachable`, or `error` (anything else, such as a wrong PIN).
    public var keyCheckReason: String
    /// The exit code `cmkfs status` ends with: 0, or the key check's error code.
    public var exitCode: Int32 = 0
    /// "ok", why the audit key (meta['audit_key']) does not unwrap, or "not checked" when the
    /// master key cannot be used.
    public var auditKey: String
    /// A live mount's FUSE transport (`dev-fuse` or `io_uring`), and why io_uring is not in use
    /// when it was asked for; set by `cmkfs status` from the mount's control socket.
    public var fuseTransport: String?
    public var fuseTransportNote: String?

    public struct Version: Codable, Sendable {
        public var version: Int
        public var state: String
        public var edeks: Int
    }

    enum CodingKeys: String, CodingKey {
        case jsonFormat = "json_format", volume, volumeID = "volume_id", format, blockSize = "block_size", names, provider
        case activeKeyVersion = "active_key_version", keyVersions = "key_versions", fileCount = "file_count"
        case mounted, mountpoint, mountPID = "mount_pid", keyCheck = "key_check", keyCheckReason = "key_check_reason"
        case auditKey = "audit_key", fuseTransport = "fuse_transport", fuseTransportNote = "fuse_transport_note"
    }

    /// Gathers the status of the volume at `path`.
    public static func of(_ path: String, kmsDir: String? = nil, pin: SecretBytes? = nil) throws(CMKError) -> VolumeStatus {
        let path = absolute(path)
        let config = try Volume.readConfig(path)
        let store = try MetadataBackends.open(volume: path)
        defer { store.close() }
        let versions: [KeyVersionRecord], files: Int, counts: [Int: Int]
        do {
            versions = try store.keyVersions()
            files = try store.fileCount()
            counts = try store.edekCounts()
        } catch { throw .metadata(error, volume: path) }
        let holder = MountLock.holder(volumePath: path)
        var keyCheck = "ok", keyCheckReason = "ok", exitCode: Int32 = 0
        var auditKey = "not checked (the master key cannot be used)"
        do {
            let v = try Volume.open(at: path, kmsDir: kmsDir, pin: pin, purpose: "status")
            do { _ = try v.auditKey(); auditKey = "ok" } catch { auditKey = error.message }
        } catch {
            keyCheck = error.message
            keyCheckReason = error.reason ?? "error"
            exitCode = error.code.rawValue
        }
        var provider = config.provider
        if let kmsDir { provider.kmsDir = absolute(kmsDir) }
        return VolumeStatus(
            volume: path, volumeID: config.volumeID, format: config.format, blockSize: config.blockSize,
            names: config.names, provider: provider,
            activeKeyVersion: versions.first { $0.state == .active }?.version,
            keyVersions: versions.map { Version(version: $0.version, state: $0.state.rawValue, edeks: counts[$0.version] ?? 0) },
            fileCount: files, mounted: holder != nil, mountpoint: holder?.mountpoint, mountPID: holder?.pid,
            keyCheck: keyCheck, keyCheckReason: keyCheckReason, exitCode: exitCode, auditKey: auditKey)
    }
}
