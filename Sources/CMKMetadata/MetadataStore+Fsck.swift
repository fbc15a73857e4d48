/// Whole-table reads for `cmkfs fsck`.
extension MetadataStore {
    /// Every file id that has any row (key or xattr), in file-id order.
    public func allFileIds() throws(MetadataError) -> [[UInt8]] {
        try locked { (c) throws(MetadataError) in
            try c.withStatement("SELECT DISTINCT file_id FROM file_attrs ORDER BY file_id") { (s) throws(MetadataError) in
                var out: [[UInt8]] = []
                while try s.step("listing file ids") { out.append(s.blob(0)) }
                return out
            }
        }
    }
}

extension MetadataStore {
    /// Every row of a file (its key rows and xattrs), by name.
    public func rows(fileID: [UInt8]) throws(MetadataError) -> [FileRow] {
        try Self.checkFileId(fileID)
        return try locked { (c) throws(MetadataError) in
            try c.withStatement("SELECT name, value, key_version FROM file_attrs WHERE file_id = ?1 ORDER BY name") { (s) throws(MetadataError) in
                try s.bind(1, fileID)
                var out: [FileRow] = []
                while try s.step("reading a file's rows") {
                    out.append(FileRow(name: s.text(0), value: s.blob(1), keyVersion: s.isNull(2) ? nil : s.int(2)))
                }
                return out
            }
        }
    }
}

extension MetadataStore {
    /// The hashes of every stored long name (`long_names`, schema 2).
    public func allLongNameHashes() throws(MetadataError) -> [[UInt8]] {
        try locked { (c) throws(MetadataError) in
            try c.withStatement("SELECT hash FROM long_names ORDER BY hash") { (s) throws(MetadataError) in
                var out: [[UInt8]] = []
                while try s.step("listing long names") { out.append(s.blob(0)) }
                return out
            }
        }
    }
}
