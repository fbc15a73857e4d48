import Foundation
import CMKCrypto
import CMKFormat
import CMKKeys
import CMKMetadata
import CMKSystem

extension Volume {
    /// Creates a new volume at `path` (a missing or empty directory) with a new master key in the
    /// embedded simulated KMS at `kmsDir`. On any failure nothing is left behind in `path`.
    public static func initialize(at path: String, kmsDir: String, blockSize: Int = BlockLayout.defaultBlockSize,
                                  plaintextNames: Bool = false) throws(CMKError) -> Volume {
        try initialize(at: path, provider: ProviderConfig(kind: ProviderKind.embedded.name, keyID: "", kmsDir: absolute(kmsDir)), blockSize: blockSize,
                       plaintextNames: plaintextNames)
    }

    /// Creates a new volume whose master key lives in `provider`. With an empty `keyID` a new
    /// master key is created there; otherwise the named key is used (pkcs11: created when the
    /// token has no `<keyID>.v1` yet). `pin` logs in to a PKCS#11 token and is never stored.
    /// File names are encrypted (volume format 2) unless `plaintextNames` (format 1, for
    /// debugging: names, directory structure and symlink targets are then in clear).
    public static func initialize(at path: String, provider providerConfig: ProviderConfig, pin: SecretBytes? = nil,
                                  blockSize: Int = BlockLayout.defaultBlockSize, plaintextNames: Bool = false) throws(CMKError) -> Volume {
        let path = absolute(path)
        try ProviderRegistry.kind(named: providerConfig.kind)?.refuseAtInit?(providerConfig, path)
        let fm = FileManager.default
        var isDir: ObjCBool = false
        var createdDirectory = false
        if fm.fileExists(atPath: path, isDirectory: &isDir) {
            guard isDir.boolValue else { throw CMKError(.initTargetNotEmpty, "\(path) exists and is not a directory") }
            let entries = (try? fm.contentsOfDirectory(atPath: path)) ?? []
            guard entries.isEmpty else {
                throw CMKError(.initTargetNotEmpty, "\(path) is not empty (\(entries.count) entries); init never writes over existing files",
                               hint: "choose a new or empty directory")
            }
            if let st = try? Descriptor.cwd.stat(path), st.st_mode & 0o077 != 0 {
                // The backing tree keeps the modes files have in the mount (a 0777 directory
                // made there is 0777 here): only a private volume directory keeps others out.
                let what = st.st_mode & 0o022 != 0 ? "writable" : "reachable"
                warn("\(path) is \(what) by other users (mode \(String(st.st_mode & 0o7777, radix: 8))): they could read or change the ciphertext, database and audit log behind the mount; chmod 700 \(path)")
            }
        } else {
            do { try fm.createDirectory(atPath: path, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700]) } catch {
                throw CMKError(.io, "cannot create \(path): \(error.localizedDescription)")
            }
            createdDirectory = true
        }
        do {
            try populate(path, providerConfig: providerConfig, pin: pin, blockSize: blockSize, plaintextNames: plaintextNames)
        } catch {
            // Leave the directory as it was: remove only what this call made.
            for name in ["data", "audit", "meta.db", "meta.db-wal", "meta.db-shm", "meta.db-reserve", VolumeConfig.fileName, VolumeConfig.fileName + ".tmp"] {
                try? fm.removeItem(atPath: path + "/" + name)
            }
            if createdDirectory { try? fm.removeItem(atPath: path) }
            throw error
        }
        let volume = try open(at: path, pin: pin)
        // The log's first record; durable before init reports success.
        let log = try volume.openAuditLog()
        do {
            try log.append(.command("init", keyID: volume.activeKey.keyID, keyVersion: volume.activeKey.version,
                                    detail: "volume created; master key \(volume.activeKey) via \(providerConfig.kind)"), durable: true)
            try log.close()
        } catch { throw CMKError(error) }
        return volume
    }

    private static func populate(_ path: String, providerConfig: ProviderConfig, pin: SecretBytes?, blockSize: Int,
                                 plaintextNames: Bool) throws(CMKError) {
        let volumeID: [UInt8]
        do { volumeID = try SecureRandom.bytes(16) } catch { throw CMKError(.internalError, "random number generator failed") }
        let provider = try makeProvider(providerConfig, create: true, volume: path, pin: pin)
        let key = try masterKey(provider, providerConfig, volume: path)

        do { try Descriptor.cwd.mkdir(path + "/data", mode: 0o755) } catch {
            throw CMKError(.io, "cannot create \(path)/data: \(error.errno)")
        }
        do {
            let store = try MetadataBackends.create(volume: path)
            defer { store.close() }
            try store.setMeta("volume_id", volumeID)
            try store.addKeyVersion(KeyVersionRecord(keyId: key.keyID, version: key.version, state: .active, createdAt: isoNow()))
            let check = try SecretBytes.random(count: 32)
            let edek = try provider.wrap(check, with: key, context: WrapContext(volumeID: volumeID, fileID: keyCheckFileID, request: .ownProcess("init")))
            try store.setMeta(keyCheckName, edek)
            _ = try auditKey(metadata: store, provider: provider, volumeID: volumeID, activeKey: key, path: path,
                             providerConfig: providerConfig)
            if !plaintextNames {
                try createNameKey(store: store, provider: provider, volumeID: volumeID, activeKey: key)
                // The root's directory id: names directly under data/ are bound to it.
                let data: FileDescriptor
                do { data = try FileDescriptor.open(path + "/data", O_RDONLY | O_DIRECTORY | O_CLOEXEC) } catch {
                    throw CMKError(.io, "cannot open \(path)/data: \(error.errno)")
                }
                try DirectoryID.create(directoryFD: data.rawValue)
            }
        } catch {
            throw .wrapping(error, volume: path, config: providerConfig, doing: "cannot create the metadata database")
        }
        var recorded = providerConfig
        recorded.keyID = key.keyID
        // Format 2 marks encrypted names, so a cmkfs that predates them refuses the volume
        // (exit 4) instead of showing ciphertext as names; plaintext names stay format 1.
        let config = VolumeConfig(format: plaintextNames ? 1 : 2, volumeID: hex(volumeID), createdAt: isoNow(),
                                  blockSize: blockSize, names: plaintextNames ? Volume.plaintextNames : encryptedNames,
                                  provider: recorded)
        try writeConfig(config, to: path)
    }

    /// The master key a new volume uses: a new one, or the named existing one (which must be
    /// enabled), unless the provider's kind names it its own way (`ProviderKind.namedMasterKey`).
    private static func masterKey(_ provider: any KeyProvider, _ config: ProviderConfig, volume: String) throws(CMKError) -> KeyRef {
        do throws(KeyProviderError) {
            if config.keyID.isEmpty { return try provider.createKey() }
            if let adopt = ProviderRegistry.kind(named: config.kind)?.namedMasterKey, let key = try adopt(provider, config.keyID) {
                return key
            }
            let key = KeyRef(keyID: config.keyID, version: 1)
            switch try provider.state(of: key) {
            case .enabled: return key
            case .disabled: throw KeyProviderError.keyDisabled(key)
            case .destroyed: throw KeyProviderError.keyDestroyed(key)
            }
        } catch {
            throw .provider(error, volume: volume, config: config)
        }
    }

    /// Written last, through a temporary file and a rename: its presence marks a complete volume.
    static func writeConfig(_ config: VolumeConfig, to path: String) throws(CMKError) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let final = path + "/" + VolumeConfig.fileName, tmp = final + ".tmp"
        do {
            var data = try encoder.encode(config)
            data.append(0x0A)
            // 0644 whatever the umask: a writable configuration could point the volume at
            // another key provider.
            try? Descriptor.cwd.unlink(tmp)
            let file: FileDescriptor
            do { file = try FileDescriptor.open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode: 0o644) } catch {
                throw CMKError(.io, "cannot create \(tmp): \(error.errno)")
            }
            do {
                try file.descriptor.writeAll([UInt8](data))
                try file.descriptor.fchmod(0o644)
                try file.descriptor.fsync()
            } catch { throw CMKError(.io, "cannot write \(tmp): \(error.errno)") }
            do { try Descriptor.cwd.rename(tmp, to: final, in: .cwd) } catch {
                throw CMKError(.io, "cannot create \(final): \(error.errno)")
            }
            if let directory = try? FileDescriptor.open(path, O_RDONLY | O_DIRECTORY) { try? directory.descriptor.fsync() }
        } catch let error as CMKError {
            throw error
        } catch {
            throw CMKError(.io, "cannot write \(final): \(error.localizedDescription)")
        }
    }
}

/// The current time as ISO-8601 UTC with milliseconds.
public func isoNow() -> String {
    let formatter = ISO8601DateFormatter()
    formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
    return formatter.string(from: Date())
}
