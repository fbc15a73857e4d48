import CMKCrypto
import CMKAudit
import CMKCrypto
import CMKFormat
import CMKKeys
import CMKMetadata

/// The master key of a volume as the key owner manages it: its versions and their state in the
/// provider. Opens without the key check, so a disabled key can be enabled again.
public struct KeyAdmin {
    public let path: String
    public let config: VolumeConfig
    public let provider: any KeyProvider
    /// The versions the volume knows, from its metadata database.
    public let versions: [KeyRef]

    /// `pin` logs in to a PKCS#11 token (used once, never stored).
    public static func open(at path: String, kmsDir: String? = nil, pin: SecretBytes? = nil) throws(CMKError) -> KeyAdmin {
        let path = absolute(path)
        let config = try Volume.readConfig(path)
        var providerConfig = config.provider
        if let kmsDir { providerConfig.kmsDir = absolute(kmsDir) }
        let store = try MetadataBackends.open(volume: path)
        defer { store.close() }
        let records: [KeyVersionRecord]
        do { records = try store.keyVersions() } catch { throw .metadata(error, volume: path) }
        let provider: any KeyProvider
        do { provider = try Volume.makeProvider(providerConfig, create: false, volume: path, pin: pin) } catch {
            Volume.notePendingDenial(volume: path, event: "key-command-denied", error: error)
            throw error
        }
        return KeyAdmin(path: path, config: config, provider: provider,
                        versions: records.filter { $0.state != .purged }.map { KeyRef(keyID: $0.keyId, version: $0.version) })
    }

    /// The volume's audit key, through the provider (get it before disabling the master key).
    public func auditKey() throws(CMKError) -> SecretBytes {
        let store = try openStore()
        defer { store.close() }
        return try Volume.auditKey(metadata: store, provider: provider, volumeID: try volumeID(store), activeKey: nil,
                                   path: path, providerConfig: config.provider)
    }

    /// Appends `event` to the log of the unmounted volume and fsyncs it (with a checkpoint).
    public func appendAudit(_ event: AuditEvent, key: SecretBytes) throws(CMKError) {
        let log = try openAuditLog(key: key)
        do { try log.append(event, durable: true) } catch {
            try? log.close()
            throw error
        }
        try log.close()
    }

    /// Opens the volume's audit log for a command on an unmounted volume, held until `close`
    /// (a mount that starts meanwhile waits for it). Get the key before disabling the master key.
    public func openAuditLog(key: SecretBytes) throws(CMKError) -> CommandAuditLog {
        let store = try openStore()
        do {
            let id = try volumeID(store)
            let log = try AuditLog.open(directory: path + "/audit", key: key, volumeID: hex(id),
                                        checkpoints: MetadataCheckpoints(store: store),
                                        anchor: ProviderAnchor(provider: provider, volumeID: id), lockWait: 5)
            try PendingDenials.ingest(into: log, directory: path + "/audit", key: DenialKey.load(volumeID: id))
            return CommandAuditLog(log: log, ownedStore: store)
        } catch let error as AuditError {
            store.close()
            throw CMKError(error)
        } catch let error as CMKError {
            store.close()
            throw error
        } catch {
            store.close()
            throw CMKError(.internalError, "\(error)")
        }
    }

    func openStore() throws(CMKError) -> any MetadataBackend {
        try MetadataBackends.open(volume: path)
    }

    func volumeID(_ store: any VolumeFactStore) throws(CMKError) -> [UInt8] {
        let id: [UInt8]?
        do { id = try store.meta("volume_id") } catch { throw .metadata(error, volume: path) }
        guard let id else { throw CMKError(.notAVolume, "the metadata database of \(path) has no volume id") }
        return id
    }

    /// Sets every version's state in the provider; returns the versions changed.
    public func setAll(_ state: ProviderKeyState) throws(CMKError) -> [KeyRef] {
        var changed: [KeyRef] = []
        for key in versions {
            do {
                guard try provider.state(of: key) != state else { continue }
                try provider.setState(state, of: key)
                changed.append(key)
            } catch {
                throw .provider(error, volume: path, config: config.provider)
            }
        }
        return changed
    }
}

/// The audit log held open by one command, with the database its checkpoints go to.
public final class CommandAuditLog {
    private let log: any AuditSink
    /// Closed with the log when the log opened it (KeyAdmin); a Volume's own store is not.
    private let ownedStore: (any MetadataMaintenance)?

    init(log: any AuditSink, ownedStore: (any MetadataMaintenance)?) {
        self.log = log
        self.ownedStore = ownedStore
    }

    public func append(_ event: AuditEvent, durable: Bool) throws(CMKError) {
        do { try log.append(event, durable: durable) } catch { throw CMKError(error) }
    }

    /// Syncs (with a checkpoint) and releases the log.
    public func close() throws(CMKError) {
        defer { ownedStore?.close() }
        do { try log.close() } catch { throw CMKError(error) }
    }
}
