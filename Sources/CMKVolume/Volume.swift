import Foundation
import Synchronization
import CMKCrypto
import CMKFormat
import CMKKeys
import CMKMetadata
import CMKMetrics

/// An opened volume: its directory, configuration, metadata database and key provider.
///
/// Layout of `VOLUME/`: `cmkfs.volume` (config), `meta.db` (+ WAL files), `data/` (the ciphertext
/// tree), `mount.lock` (held by the live mount), `mount.log` (the mount daemon's stderr).
public final class Volume: Sendable {
    public let path: String
    public let config: VolumeConfig
    public let volumeID: [UInt8]
    public let layout: BlockLayout
    /// The metadata backend (MetadataBackends.swift).
    public let metadata: any MetadataBackend
    public let provider: any KeyProvider
    /// The master-key version new files are wrapped under. A rotation by another process
    /// changes it in the database; `createFileKey` notices at its next insert and reloads.
    public var activeKey: KeyRef { active.withLock { $0 } }
    private let active: Mutex<KeyRef>
    /// The name codec of a command working on the backing tree, once unwrapped (VolumeNames.swift).
    let codecCache = Mutex<NameCodec?>(nil)
    /// What opened the volume (`mount`, `fsck`, `status`, …): the operation of the key requests
    /// it makes for itself (key check, audit and name keys, files a command reads).
    public let purpose: String
    /// The operator's justification sent with every key request (`--kms-reason`), if any.
    public let kmsReason: String?

    public var dataPath: String { path + "/data" }
    public var lockPath: String { path + "/mount.lock" }
    public var logPath: String { path + "/mount.log" }

    static let keyCheckName = "key_check"
    /// The master-key version the key check is wrapped under (absent: 1, as `init` made it).
    static let keyCheckVersionName = "key_check_version"
    static let keyCheckFileID = [UInt8](repeating: 0, count: 16)

    private init(path: String, config: VolumeConfig, volumeID: [UInt8], metadata: any MetadataBackend,
                 provider: any KeyProvider, activeKey: KeyRef, purpose: String, kmsReason: String?) {
        self.path = path
        self.purpose = purpose
        self.kmsReason = kmsReason
        self.config = config
        self.volumeID = volumeID
        self.layout = BlockLayout(blockSize: config.blockSize)
        self.metadata = metadata
        self.provider = provider
        self.active = Mutex(activeKey)
    }

    /// Opens the volume at `path`, checking its format and that its master key is reachable and
    /// is the key it was made with. `kmsDir` overrides the recorded keystore directory; `pin`
    /// logs in to a PKCS#11 token (used once, never stored). With `retry`, provider calls that
    /// fail because the provider is unavailable are tried again (an offline check, where an
    /// outage must not pass for an answer). `purpose` and `kmsReason` go with every key request
    /// the volume makes (`KeyRequest`). With `metrics`, every provider call is counted and timed
    /// there (the mount's `cmkfs metrics`).
    public static func open(at path: String, kmsDir: String? = nil, pin: SecretBytes? = nil,
                            retry: RetryPolicy? = nil, purpose: String = "command",
                            kmsReason: String? = nil, metrics: ProviderMetrics? = nil) throws(CMKError) -> Volume {
        let path = absolute(path)
        let config = try readConfig(path)
        var providerConfig = config.provider
        if let kmsDir { providerConfig.kmsDir = absolute(kmsDir) }
        guard let volumeID = unhex(config.volumeID), volumeID.count == 16 else {
            throw CMKError(.notAVolume, "\(path)/\(VolumeConfig.fileName) has a malformed volume id")
        }
        let metadata = try MetadataBackends.open(volume: path)
        let built = try makeProvider(providerConfig, create: false, volume: path, pin: pin)
        let made: any KeyProvider = metrics.map { MeteredProvider(built, metrics: $0) } ?? built
        let provider: any KeyProvider = retry.map { RetryingProvider(made, policy: $0) } ?? made
        let active: KeyVersionRecord?
        do { active = try metadata.activeKeyVersion() } catch { throw .metadata(error, volume: path) }
        guard let active else {
            throw CMKError(.notAVolume, "the metadata database of \(path) names no active master-key version")
        }
        let volume = Volume(path: path, config: config, volumeID: volumeID, metadata: metadata, provider: provider,
                            activeKey: KeyRef(keyID: active.keyId, version: active.version),
                            purpose: purpose, kmsReason: kmsReason)
        try volume.verifyKeyCheck(providerConfig)
        return volume
    }

    /// The volume over parts an admin command already holds, without the key check (the
    /// master key may be disabled): for mapping names while purging. The caller closes `metadata`.
    static func unchecked(path: String, config: VolumeConfig, provider: any KeyProvider,
                          metadata: any MetadataBackend) throws(CMKError) -> Volume {
        guard let volumeID = unhex(config.volumeID), volumeID.count == 16 else {
            throw CMKError(.notAVolume, "\(path)/\(VolumeConfig.fileName) has a malformed volume id")
        }
        let active: KeyVersionRecord?
        do { active = try metadata.activeKeyVersion() } catch { throw .metadata(error, volume: path) }
        return Volume(path: path, config: config, volumeID: volumeID, metadata: metadata, provider: provider,
                      activeKey: active.map { KeyRef(keyID: $0.keyId, version: $0.version) } ?? KeyRef(keyID: config.provider.keyID, version: 1),
                      purpose: "purge", kmsReason: nil)
    }

    /// The key check: a random key wrapped at `init`. It unwraps only with the very master key
    /// the volume was made with, so a keystore holding another key of the same id is caught here.
    private func verifyKeyCheck(_ providerConfig: ProviderConfig) throws(CMKError) {
        let edek: [UInt8]?
        do { edek = try metadata.meta(Self.keyCheckName) } catch { throw .metadata(error, volume: path) }
        guard let edek else { throw CMKError(.notAVolume, "the metadata database of \(path) has no key check record") }
        do {
            _ = try provider.unwrap(edek, with: try Self.masterKey(version: try Self.keyCheckVersion(metadata), in: metadata,
                                                                    fallback: config.provider.keyID),
                                    context: WrapContext(volumeID: volumeID, fileID: Self.keyCheckFileID, request: keyRequest()))
        } catch let error as MetadataError {
            throw .metadata(error, volume: path)
        } catch let error as KeyProviderError {
            throw .provider(error, volume: path, config: providerConfig)
        } catch {
            throw CMKError(.internalError, "\(error)")
        }
    }

    /// A key request made by this process for itself, under `operation` (default: `purpose`).
    public func keyRequest(_ operation: String? = nil) -> KeyRequest {
        KeyRequest.ownProcess(operation ?? purpose, reason: kmsReason)
    }

    static func keyCheckVersion(_ metadata: any VolumeFactStore) throws(MetadataError) -> Int {
        try metadata.meta(keyCheckVersionName).flatMap { Int(String(decoding: $0, as: UTF8.self)) } ?? 1
    }

    /// Re-reads the active master-key version from the database (after a rotation).
    public func reloadActiveKey() throws(MetadataError) -> KeyRef? {
        guard let record = try metadata.activeKeyVersion() else { return nil }
        let ref = KeyRef(keyID: record.keyId, version: record.version)
        active.withLock { $0 = ref }
        return ref
    }

    static func readConfig(_ path: String) throws(CMKError) -> VolumeConfig {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            if CMKError.isDenied(path) { throw .permissionDenied(path) }
            throw CMKError(.notAVolume, "\(path) does not exist", hint: "create a volume with: cmkfs init \(path)")
        }
        guard isDir.boolValue else { throw CMKError(.notAVolume, "\(path) is not a directory") }
        let configPath = path + "/" + VolumeConfig.fileName
        guard let data = FileManager.default.contents(atPath: configPath) else {
            if CMKError.isDenied(path) || CMKError.isDenied(configPath) { throw .permissionDenied(configPath) }
            throw CMKError(.notAVolume, "\(path) is not a cmkfs volume (no \(VolumeConfig.fileName))",
                           hint: "create a volume with: cmkfs init VOLUME, or name the directory that holds cmkfs.volume")
        }
        struct FormatOnly: Decodable { var format: Int }
        guard let format = try? JSONDecoder().decode(FormatOnly.self, from: data).format else {
            throw CMKError(.notAVolume, "\(configPath) is not a valid volume configuration")
        }
        guard format <= VolumeConfig.currentFormat, format >= 1 else {
            throw CMKError(.unsupportedFormat,
                           "\(path) has volume format \(format); this cmkfs supports format \(VolumeConfig.currentFormat)",
                           hint: format > VolumeConfig.currentFormat ? "upgrade cmkfs" : nil)
        }
        let config: VolumeConfig
        do { config = try JSONDecoder().decode(VolumeConfig.self, from: data) } catch {
            throw CMKError(.notAVolume, "\(configPath) is not a valid volume configuration: \(error)")
        }
        guard [plaintextNames, encryptedNames].contains(config.names) else {
            throw CMKError(.unsupportedFormat, "\(path) stores names as '\(config.names)', which this cmkfs does not know",
                           hint: "upgrade cmkfs")
        }
        return config
    }

    /// The provider settings recorded in the volume at `path` (so the CLI knows whether a PIN is needed).
    public static func recordedProvider(at path: String) throws(CMKError) -> ProviderConfig {
        try readConfig(absolute(path)).provider
    }

    static func makeProvider(_ config: ProviderConfig, create: Bool, volume: String,
                             pin: SecretBytes? = nil) throws(CMKError) -> any KeyProvider {
        try ProviderRegistry.makeProvider(config, create: create, volume: volume, secret: pin)
    }
}

/// `path` made absolute against the current directory, without resolving symlinks.
public func absolute(_ path: String) -> String {
    let url = path.hasPrefix("/") ? URL(fileURLWithPath: path) : URL(fileURLWithPath: FileManager.default.currentDirectoryPath).appendingPathComponent(path)
    var p = url.standardized.path
    while p.count > 1 && p.hasSuffix("/") { p.removeLast() }
    return p
}

/// Prints `cmkfs: warning: …` on stderr (the terminal of a command; `mount.log` for the daemon).
func warn(_ message: String) {
    FileHandle.standardError.write(Data("cmkfs: warning: \(message)\n".utf8))
}
