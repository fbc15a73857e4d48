/// Rows for rekey (a file re-encrypted under a fresh DEK): the journal entry that makes the
/// in-place switch redoable after a crash, and the commit that installs the new key.
extension MetadataStore {
    /// Every `meta` key starting with `prefix`, sorted.
    public func metaKeys(withPrefix prefix: String) throws(MetadataError) -> [String] {
        try locked { (c) throws(MetadataError) in
            try c.withStatement("SELECT key FROM meta WHERE substr(key, 1, length(?1)) = ?1 ORDER BY key") { (s) throws(MetadataError) in
                try s.bind(1, prefix)
                var keys: [String] = []
                while try s.step("listing volume facts") { keys.append(s.text(0)) }
                return keys
            }
        }
    }

    /// Installs a rekeyed file's new EDEK (and its re-sealed user xattrs) and removes the
    /// journal entry `journalKey`, in one transaction. Returns false, writing nothing, when
    /// `record`'s version is no longer active (a rotation committed meanwhile): wrap again.
    public func installRekeyedKey(fileID: [UInt8], _ record: FileKeyRecord, xattrs: [(name: String, value: [UInt8])],
                                  journalKey: String) throws(MetadataError) -> Bool {
        try Self.checkFileId(fileID)
        return try locked { (c) throws(MetadataError) -> Bool in
            try c.transaction("installing a rekeyed file's key") { () throws(MetadataError) -> Bool in
                let active = try c.withStatement("SELECT 1 FROM key_versions WHERE key_id = ?1 AND version = ?2 AND state = 'active'") { (s) throws(MetadataError) in
                    try s.bind(1, record.keyId)
                    try s.bind(2, record.keyVersion)
                    return try s.step("checking the active key version")
                }
                guard active else { return false }
                let changed = try c.withStatement("UPDATE file_attrs SET value = ?2, key_version = ?3 WHERE file_id = ?1 AND name = '\(Self.edekName)'") { (s) throws(MetadataError) in
                    try s.bind(1, fileID)
                    try s.bind(2, record.edek)
                    try s.bind(3, record.keyVersion)
                    _ = try s.step("storing a rekeyed file's key")
                    return s.changes
                }
                guard changed == 1 else { throw .notFound }
                try c.withStatement("INSERT OR REPLACE INTO file_attrs(file_id, name, value, key_version) VALUES(?1, '\(Self.kekName)', ?2, NULL)") { (s) throws(MetadataError) in
                    try s.bind(1, fileID)
                    try s.bind(2, Array(record.keyId.utf8))
                    _ = try s.step("storing a rekeyed file's key")
                }
                for (name, value) in xattrs {
                    try c.withStatement("UPDATE file_attrs SET value = ?3 WHERE file_id = ?1 AND name = ?2") { (s) throws(MetadataError) in
                        try s.bind(1, fileID)
                        try s.bind(2, name)
                        try s.bind(3, value)
                        _ = try s.step("re-sealing an xattr")
                    }
                }
                try c.withStatement("DELETE FROM meta WHERE key = ?1") { (s) throws(MetadataError) in
                    try s.bind(1, journalKey)
                    _ = try s.step("removing a rekey journal entry")
                }
                return true
            }
        }
    }
}
