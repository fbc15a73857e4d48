import CMKAudit
import CMKKeys

/// What a key operation must tell the volume's live mount, when one runs: cached DEKs follow
/// their EDEKs to a new master-key version (`relabel`), and the DEKs of a purged version are
/// dropped (`flush`). The CLI implements it over the control channel (CMKControl), which the
/// volume layer does not own; an implementation does nothing when the volume is not mounted.
public protocol LiveMount {
    /// Relabels the mount's cached DEKs with the versions their EDEKs are wrapped under now.
    func relabel() throws(CMKError)
    /// Drops every cached DEK wrapped under `key`, recording `reason`.
    func flush(_ key: KeyRef, reason: String) throws(CMKError)
}

extension KeyAdmin {
    /// `rotate`, then the live mount's cached DEKs follow their EDEKs to the new version (so a
    /// later purge of the old version does not cut them).
    public func rotate(batchSize: Int = 1000, maxRate: Double? = nil, newKeyID: String? = nil, audit: AuditRecorder, mount: any LiveMount,
                       progress: (Int, Int) -> Void = { _, _ in }) throws(CMKError) -> RotationReport {
        let report = try rotate(batchSize: batchSize, maxRate: maxRate, newKeyID: newKeyID, audit: audit, progress: progress)
        try mount.relabel()
        return report
    }

    /// The whole purge of `version`: the checks of `filesBlockingPurge`, then `confirm(count)`
    /// of the files that would become unreadable (it throws to decline); a refusal or a declined
    /// confirmation is recorded as a denied `purge`. Then the mount relabels (DEKs already
    /// re-wrapped must not be cut with the version they left), the version is destroyed, and the
    /// mount drops what it still caches under it.
    public func purge(version: Int, force: Bool, confirm: (Int) throws(CMKError) -> Void, audit: AuditRecorder,
                      mount: any LiveMount) throws(CMKError) -> PurgeReport {
        let files: [[UInt8]]
        do throws(CMKError) {
            files = try filesBlockingPurge(of: version, force: force)
            try confirm(files.count)
        } catch {
            // A refusal is a key event too.
            try? audit(.command("purge", result: "denied", error: error.message, keyID: config.provider.keyID, keyVersion: version), true)
            throw error
        }
        try? mount.relabel()
        let report = try purge(version: version, files: files, force: force, audit: audit)
        let key = versions.first { $0.version == version } ?? KeyRef(keyID: config.provider.keyID, version: version)
        try? mount.flush(key, reason: "cmkfs key purge --version \(version)")
        return report
    }
}
