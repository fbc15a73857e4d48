import Foundation
import Synchronization
import CMKAudit
import CMKCrypto
import CMKFormat
import CMKKeys
import CMKMetadata

/// How a volume operation records its audit events: the CLI routes them to the live mount (which
/// owns the log while mounted) or to the volume's `AuditSink` itself. `durable`: safe against a
/// power cut before the call returns.
public typealias AuditRecorder = (AuditEvent, _ durable: Bool) throws(CMKError) -> Void

/// A rotation's progress, kept in `meta['rotation']` (JSON) and updated in the same
/// transaction as each batch, so a killed rotation resumes after its last committed batch.
struct RotationProgress: Codable {
    var target: Int
    var startedAt: String
    /// The version being drained and the last file id (hex) whose batch committed.
    var cursorVersion: Int?
    var cursorFile: String?
    var rewrapped: Int
    /// File ids (hex, at most `maxListed`) whose EDEK did not unwrap; they stay under their old
    /// version and keep it from being purged without --force.
    var failed: [String]
    var failedCount: Int

    static let metaName = "rotation"
    static let maxListed = 100

    enum CodingKeys: String, CodingKey {
        case target, startedAt = "started_at", cursorVersion = "cursor_version", cursorFile = "cursor_file"
        case rewrapped, failed, failedCount = "failed_count"
    }

    func encoded() -> [UInt8] { (try? Array(JSONEncoder().encode(self))) ?? [] }
}

/// What `cmkfs key rotate` did.
public struct RotationReport: Codable, Sendable {
    /// The version of this JSON shape (docs/json.md); bumped only when a field changes meaning or goes.
    public var format = 1
    public var keyID: String
    public var target: Int
    public var resumed: Bool
    public var rewrapped: Int
    public var failed: Int
    /// Up to 100 file ids (hex) whose EDEK did not unwrap.
    public var failedFiles: [String]
    public var seconds: Double
    public var perSecond: Double

    enum CodingKeys: String, CodingKey {
        case format, keyID = "key_id", target = "active_version", resumed, rewrapped, failed, failedFiles = "failed_files"
        case seconds, perSecond = "per_second"
    }
}

extension KeyAdmin {
    /// Rotates the master key: creates the next version in the provider, makes it active for new
    /// files at once, and re-wraps every EDEK of the older versions under it in batches of
    /// `batchSize`, each batch one transaction with the progress record. A rotation already in
    /// progress (the command or the mount was killed) is resumed instead of starting another.
    /// File data is never touched. `progress(done, total)` is called after each batch.
    /// `maxRate` (EDEKs per second) spares a shared HSM or KMS; nil is as fast as it goes.
    /// `newKeyID`: the new version is that key of the provider instead of the next version of
    /// the current one (`KeySwitching`: AWS KMS), and the volume's configuration records it.
    public func rotate(batchSize: Int = 1000, maxRate: Double? = nil, newKeyID: String? = nil, audit: AuditRecorder,
                       progress: (Int, Int) -> Void = { _, _ in }) throws(CMKError) -> RotationReport {
        let start = Date()
        let store = try openStore()
        defer { store.close() }
        let volumeID = try volumeID(store)
        var keyID = config.provider.keyID
        var state: RotationProgress
        let resumed: Bool
        do {
            if let raw = try store.meta(RotationProgress.metaName) {
                guard let decoded = try? JSONDecoder().decode(RotationProgress.self, from: Data(raw)) else {
                    throw CMKError(.notAVolume, "the rotation progress record in \(path)/meta.db is unreadable",
                                   hint: "run: cmkfs fsck \(path)")
                }
                state = decoded
                resumed = true
                keyID = try Volume.masterKey(version: state.target, in: store, fallback: keyID).keyID
                if let newKeyID, newKeyID != keyID {
                    throw CMKError(.refused, "a rotation to version \(state.target) (\(keyID)) of \(path) is unfinished; it must finish before another key is taken",
                                   hint: "finish it first: cmkfs key rotate \(path) (without a new key), then rotate onto \(newKeyID)")
                }
                try audit(.command("rotate", keyID: keyID, keyVersion: state.target,
                                   detail: "resumed: \(state.rewrapped) EDEKs were re-wrapped before the interruption"), true)
            } else {
                state = try beginRotation(store: store, volumeID: volumeID, newKeyID: newKeyID, audit: audit)
                keyID = try Volume.masterKey(version: state.target, in: store, fallback: keyID).keyID
                resumed = false
            }
        } catch let error as CMKError { throw error } catch {
            throw CMKError.wrapping(error, volume: path, config: config.provider, doing: "cannot start the rotation")
        }

        let target = KeyRef(keyID: keyID, version: state.target)
        // After the switch committed (or on resuming one whose command was killed before it
        // got here): the configuration names the key new files are wrapped under.
        try recordActiveKeyID(target.keyID)
        do {
            try drain(store: store, volumeID: volumeID, target: target, state: &state, batchSize: batchSize,
                      maxRate: maxRate, audit: audit, progress: progress)
        } catch {
            let why = "\(error)"
            try? audit(.command("rotate", result: "error", error: why, keyID: keyID, keyVersion: target.version,
                                detail: "interrupted after \(state.rewrapped) EDEKs; run cmkfs key rotate again to resume"), true)
            throw error
        }
        let seconds = Date().timeIntervalSince(start)
        let report = RotationReport(keyID: keyID, target: target.version, resumed: resumed, rewrapped: state.rewrapped,
                                    failed: state.failedCount, failedFiles: state.failed, seconds: seconds,
                                    perSecond: seconds > 0 ? Double(state.rewrapped) / seconds : 0)
        try audit(.command("rotate", result: state.failedCount == 0 ? "ok" : "error",
                           error: state.failedCount == 0 ? nil : "\(state.failedCount) EDEKs did not unwrap: \(state.failed.prefix(10).joined(separator: ", "))",
                           keyID: keyID, keyVersion: target.version,
                           detail: "finished: \(state.rewrapped) EDEKs re-wrapped under \(target)"), true)
        do {
            try store.deleteMeta(RotationProgress.metaName)
            try store.makeDurable()
        } catch { throw .metadata(error, volume: path) }
        return report
    }

    /// Runs `body(0)` … `body(workers - 1)` at once and returns when all have. Not
    /// `DispatchQueue.concurrentPerform`: it runs at most one iteration per processor at a time,
    /// so a provider that waits on I/O (a socket KMS 1 ms away) had two requests in flight on
    /// this 2-core machine however many workers were asked for (~860 EDEK/s, docs/benchmarks.md).
    static func onThreads(_ workers: Int, _ body: @escaping @Sendable (Int) -> Void) {
        guard workers > 1 else { body(0); return }
        let group = DispatchGroup()
        for worker in 1..<workers {
            group.enter()
            let thread = Thread { body(worker); group.leave() }
            thread.stackSize = 512 * 1024
            thread.start()
        }
        body(0)
        group.wait()
    }

    /// Rewrites `cmkfs.volume` with `keyID` as the master key when it names another (a rotation
    /// onto a new provider key): through a temporary file and a rename, like `init`.
    private func recordActiveKeyID(_ keyID: String) throws(CMKError) {
        var current = try Volume.readConfig(path)
        guard current.provider.keyID != keyID else { return }
        current.provider.keyID = keyID
        try Volume.writeConfig(current, to: path)
    }

    /// Creates the new version, re-wraps the volume's own secrets (key check, audit key, name key) under
    /// it and commits the switch; from then on every new file is wrapped under the new version.
    /// With `newKeyID` (another key than the active version's), the new version is that key.
    private func beginRotation(store: any MetadataBackend, volumeID: [UInt8], newKeyID: String?, audit: AuditRecorder) throws -> RotationProgress {
        let records = try store.keyVersions()
        guard let active = records.first(where: { $0.state == .active }) else {
            throw CMKError(.notAVolume, "the metadata database of \(path) names no active master-key version")
        }
        let keyID = active.keyId
        /// The key a version of the volume was wrapped under, as the volume recorded it.
        func key(_ version: Int) -> KeyRef {
            KeyRef(keyID: records.last { $0.version == version }?.keyId ?? config.provider.keyID, version: version)
        }
        // Refuse before creating anything when the current key cannot be used (revoked).
        let activeRef = KeyRef(keyID: active.keyId, version: active.version)
        let activeState = try provider.state(of: activeRef)
        guard activeState == .enabled else {
            throw CMKError(.keyUnavailable, "master key \(activeRef) is \(activeState): the rotation needs it to re-wrap",
                           hint: activeState == .disabled ? "enable it first: cmkfs key enable \(path)" : nil)
        }
        var secrets: [String: [UInt8]] = [:]
        let newRef: KeyRef
        if let newKeyID, newKeyID != keyID {
            guard let switching = (provider as? any KeySwitching) ?? ((provider as? RetryingProvider)?.base as? any KeySwitching) else {
                throw CMKError(.usage, "the \(config.provider.kind) key provider cannot move \(path) onto another key at rotation",
                               hint: "rotate without a new key: cmkfs key rotate \(path)")
            }
            newRef = try switching.adoptKey(newKeyID, asVersion: (records.map(\.version).max() ?? 0) + 1)
        } else {
            newRef = try provider.createVersion(of: keyID)
        }
        let request = KeyRequest.ownProcess("rotate")
        let checkContext = WrapContext(volumeID: volumeID, fileID: Volume.keyCheckFileID, request: request)
        if let check = try store.meta(Volume.keyCheckName) {
            let old = key(try Volume.keyCheckVersion(store))
            let secret = try provider.unwrap(check, with: old, context: checkContext)
            secrets[Volume.keyCheckName] = try provider.wrap(secret, with: newRef, context: checkContext)
            secrets[Volume.keyCheckVersionName] = Array(String(newRef.version).utf8)
        }
        let auditContext = WrapContext(volumeID: volumeID, fileID: Volume.auditKeyFileID, request: request)
        if let edek = try store.meta(Volume.auditKeyName), let raw = try store.meta(Volume.auditKeyVersionName),
           let version = Int(String(decoding: raw, as: UTF8.self)) {
            let secret = try provider.unwrap(edek, with: key(version), context: auditContext)
            secrets[Volume.auditKeyName] = try provider.wrap(secret, with: newRef, context: auditContext)
            secrets[Volume.auditKeyVersionName] = Array(String(newRef.version).utf8)
        }
        let nameContext = WrapContext(volumeID: volumeID, fileID: Volume.nameKeyFileID, request: request)
        if let edek = try store.meta(Volume.nameKeyName), let version = try Volume.nameKeyVersion(store) {
            let secret = try provider.unwrap(edek, with: key(version), context: nameContext)
            secrets[Volume.nameKeyName] = try provider.wrap(secret, with: newRef, context: nameContext)
            secrets[Volume.nameKeyVersionName] = Array(String(newRef.version).utf8)
        }
        let state = RotationProgress(target: newRef.version, startedAt: isoNow(), rewrapped: 0, failed: [], failedCount: 0)
        secrets[RotationProgress.metaName] = state.encoded()
        try store.beginRotation(to: KeyVersionRecord(keyId: newRef.keyID, version: newRef.version, state: .active, createdAt: isoNow()),
                                meta: secrets)
        try store.makeDurable()
        let pending = try store.edekCounts().filter { $0.key != newRef.version }.values.reduce(0, +)
        try audit(.command("rotate", keyID: newRef.keyID, keyVersion: newRef.version,
                           detail: "started: \(activeRef) deactivated, \(newRef) active; \(pending) EDEKs to re-wrap"
                               + (newRef.keyID == keyID ? "" : " into another key")), true)
        return state
    }

    /// Re-wraps every EDEK of the non-target, non-purged versions, batch by batch.
    private func drain(store: any MetadataBackend, volumeID: [UInt8], target: KeyRef, state: inout RotationProgress,
                       batchSize: Int, maxRate: Double?, audit: AuditRecorder, progress: (Int, Int) -> Void) throws(CMKError) {
        let started = Date()
        var doneHere = 0
        let sources: [KeyVersionRecord]
        let counts: [Int: Int]
        do {
            sources = try store.keyVersions().filter { $0.version != target.version && $0.state != .purged }
            counts = try store.edekCounts()
        } catch { throw .metadata(error, volume: path) }
        var done = state.rewrapped
        let total = done + sources.reduce(0) { $0 + (counts[$1.version] ?? 0) }
        progress(done, total)
        for source in sources.sorted(by: { $0.version < $1.version }) {
            if let cursor = state.cursorVersion, source.version < cursor { continue }
            let from = KeyRef(keyID: source.keyId, version: source.version)
            var after = state.cursorVersion == source.version ? state.cursorFile.flatMap(unhex) : nil
            while true {
                let batch: [WrappedKey]
                do { batch = try store.wrappedKeys(version: source.version, after: after, limit: batchSize) } catch {
                    throw .metadata(error, volume: path)
                }
                guard let last = batch.last else { break }
                // One request id for the batch; its requests are ID.0, ID.1, … (the batch's
                // audit record names the id, the KMS's log each request).
                let request = KeyRequest.ownProcess("rotate")
                let outcomes = try rewrapAll(batch, from: from, to: target, volumeID: volumeID, request: request)
                var rewraps: [Rewrap] = []
                for (item, outcome) in zip(batch, outcomes) {
                    if let edek = outcome {
                        rewraps.append(Rewrap(fileID: item.fileID, oldEdek: item.edek, newEdek: edek))
                    } else {
                        state.failedCount += 1
                        if state.failed.count < RotationProgress.maxListed { state.failed.append(hex(item.fileID)) }
                    }
                }
                state.cursorVersion = source.version
                state.cursorFile = hex(last.fileID)
                // Rows deleted or rekeyed since they were read count as done: nothing is left
                // under the old version for them.
                state.rewrapped += rewraps.count
                let changed: Int
                do {
                    changed = try store.storeRewrapped(rewraps, newVersion: target.version,
                                                       newKeyID: from.keyID == target.keyID ? nil : target.keyID,
                                                       meta: [RotationProgress.metaName: state.encoded()])
                } catch { throw .metadata(error, volume: path) }
                done += batch.count
                var record = AuditEvent.command("rotate-batch", keyID: target.keyID, keyVersion: target.version,
                                                detail: "\(from) -> v\(target.version): \(changed) re-wrapped, \(batch.count - rewraps.count) failed, through file \(hex(last.fileID))")
                record.kmsRequest = request.id
                try audit(record, false)
                progress(min(done, total), total)
                after = last.fileID
                doneHere += batch.count
                if let maxRate, maxRate > 0 {
                    let ahead = Double(doneHere) / maxRate - Date().timeIntervalSince(started)
                    if ahead > 0 { Thread.sleep(forTimeInterval: ahead) }
                }
            }
        }
    }

    /// Unwraps each EDEK under `from` and wraps its DEK under `to`, in parallel (the provider may
    /// be a network KMS or an HSM): as many requests in flight as the provider kind's
    /// `rotationParallelism`, each worker on a thread of its own; or hands the whole batch to a
    /// provider that re-wraps itself (`BatchRewrapping`: Vault transit's rewrap, where the DEKs
    /// never leave the server). nil: this EDEK did not unwrap (tampered or moved row). A
    /// provider refusal or outage aborts the batch: nothing of it is stored.
    private func rewrapAll(_ batch: [WrappedKey], from: KeyRef, to: KeyRef,
                           volumeID: [UInt8], request: KeyRequest) throws(CMKError) -> [[UInt8]?] {
        let provider = self.provider
        let batching = (provider as? any BatchRewrapping) ?? ((provider as? RetryingProvider)?.base as? any BatchRewrapping)
        if let batching {
            do {
                return try batching.rewrap(batch.map { ($0.edek, WrapContext(volumeID: volumeID, fileID: $0.fileID, request: request)) },
                                           from: from, to: to)
            } catch { throw CMKError.provider(error, volume: path, config: config.provider) }
        }
        enum Outcome: Sendable { case wrapped([UInt8]), bad, abort(KeyProviderError) }
        let results = Mutex([Outcome](repeating: .bad, count: batch.count))
        let workers = min(batch.count, (ProviderRegistry.kind(named: config.provider.kind)?.rotationParallelism ?? .fixed(8)).workers)
        Self.onThreads(workers) { worker in
            for i in stride(from: worker, to: batch.count, by: workers) {
                let item = batch[i]
                let context = WrapContext(volumeID: volumeID, fileID: item.fileID, request: request.item(i))
                let outcome: Outcome
                do throws(KeyProviderError) {
                    let dek = try provider.unwrap(item.edek, with: from, context: context)
                    outcome = .wrapped(try provider.wrap(dek, with: to, context: context))
                } catch {
                    if case .unwrapFailed = error { outcome = .bad } else { outcome = .abort(error) }
                }
                results.withLock { $0[i] = outcome }
            }
        }
        return try results.withLock { (all) throws(CMKError) -> [[UInt8]?] in
            var out: [[UInt8]?] = []
            out.reserveCapacity(all.count)
            for outcome in all {
                switch outcome {
                case .wrapped(let edek): out.append(edek)
                case .bad: out.append(nil)
                case .abort(let error):
                    throw CMKError.provider(error, volume: path, config: config.provider)
                }
            }
            return out
        }
    }
}
