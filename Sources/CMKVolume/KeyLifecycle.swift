import Foundation
import CMKAudit
import CMKCrypto
import CMKFormat
import CMKKeys
import CMKMetadata

/// What `cmkfs key list` shows: every master-key version the volume knows, its state and how
/// many EDEKs it wraps, and the rotation in progress if one was interrupted.
public struct KeyListing: Codable, Sendable {
    public struct Version: Codable, Sendable {
        public var version: Int
        /// `active`, `deactivated`, `disabled` (refused by the provider now), `destroyed`
        /// (destroyed in the provider outside cmkfs) or `purged`.
        public var state: String
        public var edeks: Int
        public var createdAt: String
        /// The provider's answer when it could not be asked.
        public var providerError: String?

        enum CodingKeys: String, CodingKey {
            case version, state, edeks, createdAt = "created_at", providerError = "provider_error"
        }
    }

    public struct Rotation: Codable, Sendable {
        public var target: Int
        public var startedAt: String
        public var rewrapped: Int
        enum CodingKeys: String, CodingKey { case target = "active_version", startedAt = "started_at", rewrapped }
    }

    public var format = 1
    public var keyID: String
    public var provider: String
    public var versions: [Version]
    public var rotation: Rotation?

    enum CodingKeys: String, CodingKey { case format, keyID = "key_id", provider, versions, rotation = "rotation_in_progress" }
}

/// What a purge did.
public struct PurgeReport: Codable, Sendable {
    /// The version of this JSON shape (docs/json.md).
    public var format = 1
    public var version: Int
    /// Files made unreadable (forced purge): file id (hex) and backing paths.
    public var unreadable: [UnreadableFile]

    public struct UnreadableFile: Codable, Sendable {
        public var fileID: String
        public var paths: [String]
        enum CodingKeys: String, CodingKey { case fileID = "file_id", paths }
    }
}

extension KeyAdmin {
    /// The versions, their states (the volume's record, refined by the provider's answer) and
    /// EDEK counts.
    public func list() throws(CMKError) -> KeyListing {
        let store = try openStore()
        defer { store.close() }
        let records: [KeyVersionRecord], counts: [Int: Int], rotation: RotationProgress?
        do {
            records = try store.keyVersions()
            counts = try store.edekCounts()
            rotation = try store.meta(RotationProgress.metaName).flatMap { try? JSONDecoder().decode(RotationProgress.self, from: Data($0)) }
        } catch { throw .metadata(error, volume: path) }
        let versions = records.map { record -> KeyListing.Version in
            var state = record.state.rawValue
            var providerError: String?
            if record.state != .purged {
                do {
                    switch try provider.state(of: KeyRef(keyID: record.keyId, version: record.version)) {
                    case .enabled: break
                    case .disabled: state = "disabled"
                    case .destroyed: state = "destroyed"
                    }
                } catch { providerError = "\(error)" }
            }
            return KeyListing.Version(version: record.version, state: state, edeks: counts[record.version] ?? 0,
                                      createdAt: record.createdAt, providerError: providerError)
        }
        return KeyListing(keyID: config.provider.keyID, provider: config.provider.kind, versions: versions,
                          rotation: rotation.map { .init(target: $0.target, startedAt: $0.startedAt, rewrapped: $0.rewrapped) })
    }

    /// The ids of the files still wrapped under `version`, after checking it may be purged at
    /// all: recorded, not active, not already purged, and holding none of the key check, the
    /// audit key and the name key. An interrupted rotation refuses too, unless `force` (the files it has not
    /// reached yet are then among those returned).
    public func filesBlockingPurge(of version: Int, force: Bool = false) throws(CMKError) -> [[UInt8]] {
        let store = try openStore()
        defer { store.close() }
        do {
            guard let record = try store.keyVersions().first(where: { $0.version == version }) else {
                throw CMKError(.usage, "the volume has no master-key version \(version)", hint: "list them with: cmkfs key list \(path)")
            }
            switch record.state {
            case .active:
                throw CMKError(.refused, "version \(version) is the active master key; new files are wrapped under it",
                               hint: "rotate first: cmkfs key rotate \(path), then purge version \(version)")
            case .purged:
                throw CMKError(.refused, "version \(version) is already purged")
            case .deactivated, .disabled: break
            }
            if !force, try store.meta(RotationProgress.metaName) != nil {
                throw CMKError(.refused, "a rotation is in progress: version \(version) may still be needed",
                               hint: "finish it with: cmkfs key rotate \(path) (it resumes)")
            }
            let secretVersions = [try Volume.keyCheckVersion(store),
                                  try store.meta(Volume.auditKeyVersionName).flatMap { Int(String(decoding: $0, as: UTF8.self)) },
                                  try Volume.nameKeyVersion(store)]
            guard !secretVersions.contains(version) else {
                throw CMKError(.refused, "version \(version) still wraps the volume's key check, audit key or name key",
                               hint: "rotate with: cmkfs key rotate \(path)")
            }
            return try store.fileIDs(version: version)
        } catch let error as CMKError { throw error } catch let error as MetadataError {
            throw .metadata(error, volume: path)
        } catch { throw CMKError(.internalError, "\(error)") }
    }

    /// Destroys `version` in the provider and marks it purged. `files` are those still wrapped
    /// under it (from `filesBlockingPurge`); with any, `force` must be set: each becomes
    /// unreadable and gets its own audit record (file id and backing paths) before the destroy.
    public func purge(version: Int, files: [[UInt8]], force: Bool, audit: AuditRecorder) throws(CMKError) -> PurgeReport {
        // The version's own key (another than the configuration's after a rotation onto a new key).
        let ref = versions.first { $0.version == version } ?? KeyRef(keyID: config.provider.keyID, version: version)
        let keyID = ref.keyID
        guard files.isEmpty || force else {
            try audit(.command("purge", result: "denied", error: "\(files.count) files are still wrapped under \(ref)",
                               keyID: keyID, keyVersion: version, detail: "refused without --force"), true)
            throw CMKError(.refused, "\(files.count) files are still wrapped under \(ref); purging it would make them unreadable",
                           hint: "finish the rotation with: cmkfs key rotate \(path) (it resumes), or purge anyway with --force")
        }
        var report = PurgeReport(version: version, unreadable: [])
        if !files.isEmpty {
            let backing = BackingTree.paths(of: Set(files), under: path + "/data", encryptedNames: config.encryptsNames)
            // Backing paths → mount paths (encrypted names are decrypted; the name key is
            // under the active version, which a purge never destroys).
            let store = try openStore()
            defer { store.close() }
            let volume = try Volume.unchecked(path: path, config: config, provider: provider, metadata: store)
            for id in files {
                let names = (backing[id] ?? []).map { rel in
                    ((try? volume.mountPath(forBackingPath: rel)).map { String($0.dropFirst()) }) ?? rel
                }
                report.unreadable.append(.init(fileID: hex(id), paths: names))
                var event = AuditEvent.command("purge-unreadable", keyID: keyID, keyVersion: version,
                                               detail: "its EDEK is wrapped only under \(ref), which is being purged")
                event.fileID = hex(id)
                event.path = names.first.map { "/" + $0 }
                try audit(event, false)
            }
        }
        do {
            // Where versions are labels over one provider key (AWS KMS), destroying this one would
            // destroy the active one too: the version is retired in the volume only.
            if provider.versionsAreSeparateKeys, try provider.state(of: ref) != .destroyed { try provider.setState(.destroyed, of: ref) }
        } catch {
            try? audit(.command("purge", result: "error", error: "\(error)", keyID: keyID, keyVersion: version), true)
            throw .provider(error, volume: path, config: config.provider)
        }
        let store = try openStore()
        defer { store.close() }
        do {
            try store.setKeyVersionState(keyId: keyID, version: version, .purged)
            try store.makeDurable()
        } catch { throw .metadata(error, volume: path) }
        let what = provider.versionsAreSeparateKeys ? "destroyed \(ref) in the \(config.provider.kind) provider"
            : "retired \(ref) in the volume (the \(config.provider.kind) provider keeps one key for every version; it is not destroyed)"
        try audit(.command("purge", keyID: keyID, keyVersion: version, detail: "\(what); \(files.count) files unreadable"), true)
        return report
    }
}
