/// Rows for master-key rotation and purge: switching the active version, draining the EDEKs of
/// old versions in batches, and the progress record that lets an interrupted rotation resume.
extension MetadataStore {
    /// In one transaction: every active version becomes deactivated, `newVersion` is recorded
    /// as active, and the `meta` rows (re-wrapped volume secrets, the progress record) are set.
    /// From the commit on, `insertFileKey(onlyIfActive:)` refuses the old version everywhere.
    public func beginRotation(to newVersion: KeyVersionRecord, meta: [String: [UInt8]]) throws(MetadataError) {
        try locked { (c) throws(MetadataError) in
            try c.transaction("starting a key rotation") { () throws(MetadataError) in
                try c.withStatement("UPDATE key_versions SET state = 'deactivated' WHERE state = 'active'") { (s) throws(MetadataError) in
                    _ = try s.step("deactivating the old key version")
                }
                try c.withStatement("INSERT INTO key_versions(key_id, version, state, created_at) VALUES(?1, ?2, 'active', ?3)") { (s) throws(MetadataError) in
                    try s.bind(1, newVersion.keyId)
                    try s.bind(2, newVersion.version)
                    try s.bind(3, newVersion.createdAt)
                    _ = try s.step("recording the new key version")
                }
                for (key, value) in meta.sorted(by: { $0.key < $1.key }) { try Self.upsertMeta(c, key, value) }
            }
        }
    }

    /// Up to `limit` EDEKs under `version` whose file id sorts after `after`, in file-id order
    /// (a keyset cursor: a resumed rotation continues exactly where its last batch committed).
    public func wrappedKeys(version: Int, after: [UInt8]?, limit: Int) throws(MetadataError) -> [WrappedKey] {
        try locked { (c) throws(MetadataError) in
            try c.withStatement("SELECT file_id, value FROM file_attrs WHERE key_version = ?1 AND name = '\(Self.edekName)' AND file_id > ?2 ORDER BY file_id LIMIT ?3") { (s) throws(MetadataError) in
                try s.bind(1, version)
                try s.bind(2, after ?? [])
                try s.bind(3, limit)
                var out: [WrappedKey] = []
                while try s.step("reading EDEKs to re-wrap") {
                    out.append(WrappedKey(fileID: s.blob(0), keyVersion: version, edek: s.blob(1)))
                }
                return out
            }
        }
    }

    /// Stores a batch of re-wrapped EDEKs under `newVersion` and the `meta` rows (the progress
    /// record) in one transaction; returns how many rows still held their old EDEK and changed.
    /// `newKeyID`: the new version is another provider key (a rotation onto a new KMS key), so
    /// each changed file's key-id row (`cmkfs.kek`) moves with its EDEK.
    public func storeRewrapped(_ batch: [Rewrap], newVersion: Int, newKeyID: String?,
                               meta: [String: [UInt8]]) throws(MetadataError) -> Int {
        try locked { (c) throws(MetadataError) in
            try c.transaction("storing re-wrapped EDEKs") { () throws(MetadataError) -> Int in
                var changed = 0
                for item in batch {
                    try Self.checkFileId(item.fileID)
                    let moved = try c.withStatement("UPDATE file_attrs SET value = ?3, key_version = ?4 WHERE file_id = ?1 AND name = '\(Self.edekName)' AND value = ?2") { (s) throws(MetadataError) in
                        try s.bind(1, item.fileID)
                        try s.bind(2, item.oldEdek)
                        try s.bind(3, item.newEdek)
                        try s.bind(4, newVersion)
                        _ = try s.step("storing a re-wrapped EDEK")
                        return s.changes
                    }
                    changed += moved
                    if moved > 0, let newKeyID {
                        try c.withStatement("UPDATE file_attrs SET value = ?2 WHERE file_id = ?1 AND name = '\(Self.kekName)'") { (s) throws(MetadataError) in
                            try s.bind(1, item.fileID)
                            try s.bind(2, Array(newKeyID.utf8))
                            _ = try s.step("recording the key id of a re-wrapped EDEK")
                        }
                    }
                }
                for (key, value) in meta.sorted(by: { $0.key < $1.key }) { try Self.upsertMeta(c, key, value) }
                return changed
            }
        }
    }

    /// The ids of the files whose EDEK is wrapped under `version`, in file-id order.
    public func fileIDs(version: Int) throws(MetadataError) -> [[UInt8]] {
        try locked { (c) throws(MetadataError) in
            try c.withStatement("SELECT file_id FROM file_attrs WHERE key_version = ?1 AND name = '\(Self.edekName)' ORDER BY file_id") { (s) throws(MetadataError) in
                try s.bind(1, version)
                var out: [[UInt8]] = []
                while try s.step("listing the files under a key version") { out.append(s.blob(0)) }
                return out
            }
        }
    }

    /// Removes the volume-level value for `key` (absent is fine).
    public func deleteMeta(_ key: String) throws(MetadataError) {
        try locked { (c) throws(MetadataError) in
            try c.withStatement("DELETE FROM meta WHERE key = ?1") { (s) throws(MetadataError) in
                try s.bind(1, key)
                _ = try s.step("removing a volume fact")
            }
        }
    }

    static func upsertMeta(_ c: Connection, _ key: String, _ value: [UInt8]) throws(MetadataError) {
        try c.withStatement("INSERT INTO meta(key, value) VALUES(?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value") { (s) throws(MetadataError) in
            try s.bind(1, key)
            try s.bind(2, value)
            _ = try s.step("writing a volume fact")
        }
    }
}
