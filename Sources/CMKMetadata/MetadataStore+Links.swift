import CSQLite

/// Name bindings (format 2): one `file_attrs` row per directory entry of a regular file, named
/// `cmkfs.link.<hex tag>` with an empty value, where the tag is a MAC of (file id, directory id,
/// backing name) under a key derived from the name key. An open checks that the file it found
/// has the row for the entry it was reached by, so a backing file moved or copied under another
/// name reads as EIO (docs/threat-model.md). The rows go with the file's other rows on unlink.
extension MetadataStore {
    static let linkPrefix = "cmkfs.link."

    /// `cmkfs.link.` + lower-case hex of `tag`, written into one buffer: mapping each byte to
    /// two `String(radix:)`s and joining them was 2 % of a key-miss open's CPU (issue 20).
    static func linkRowName(_ tag: [UInt8]) -> String {
        let prefix = linkPrefix.utf8
        return String(unsafeUninitializedCapacity: prefix.count + tag.count * 2) { out in
            var i = 0
            for c in prefix { out[i] = c; i += 1 }
            for b in tag {
                out[i] = hexDigits[Int(b >> 4)]
                out[i + 1] = hexDigits[Int(b & 0x0F)]
                i += 2
            }
            return i
        }
    }

    private static let hexDigits = Array("0123456789abcdef".utf8)

    /// Adds the bindings `add` and removes `remove`, for any number of files, in one transaction
    /// (a rename adds the new entry's binding and drops the old one together).
    public func changeLinks(add: [(fileID: [UInt8], tag: [UInt8])], remove: [(fileID: [UInt8], tag: [UInt8])] = []) throws(MetadataError) {
        for link in add + remove { try Self.checkFileId(link.fileID) }
        try locked { (c) throws(MetadataError) in
            try c.transaction("binding file names") { () throws(MetadataError) in
                for link in add {
                    try c.withStatement("INSERT OR IGNORE INTO file_attrs(file_id, name, value, key_version) VALUES(?1, ?2, x'', NULL)") { (s) throws(MetadataError) in
                        try s.bind(1, link.fileID)
                        try s.bind(2, Self.linkRowName(link.tag))
                        try s.step("binding a file name")
                    }
                }
                for link in remove {
                    try c.withStatement("DELETE FROM file_attrs WHERE file_id = ?1 AND name = ?2") { (s) throws(MetadataError) in
                        try s.bind(1, link.fileID)
                        try s.bind(2, Self.linkRowName(link.tag))
                        try s.step("unbinding a file name")
                    }
                }
            }
        }
    }

    /// Whether the file has the binding `tag`.
    public func hasLink(fileID: [UInt8], tag: [UInt8]) throws(MetadataError) -> Bool {
        try Self.checkFileId(fileID)
        return try locked { (c) throws(MetadataError) in
            try c.withStatement("SELECT 1 FROM file_attrs WHERE file_id = ?1 AND name = ?2") { (s) throws(MetadataError) in
                try s.bind(1, fileID)
                try s.bind(2, Self.linkRowName(tag))
                return try s.step("checking a file name's binding")
            }
        }
    }

    /// `fileKeySQL` over the file's binding rows too, which follow its key-id row in the primary
    /// key's order (`cmkfs.link.…`), the binding row ?2 told apart in column 0: the key and the
    /// binding with one descent of the b-tree and a step per row (a file has a binding row per
    /// hard link), where an EXISTS subquery opened a second cursor and descended again (issue 20).
    static let fileKeyAndLinkSQL = "SELECT CASE name WHEN '\(edekName)' THEN 1 WHEN '\(kekName)' THEN 2 WHEN ?2 THEN 3 ELSE 0 END, value, key_version FROM file_attrs WHERE file_id = ?1 AND name >= '\(edekName)' AND name < 'cmkfs.link/'"

    /// The file's wrapped key and whether it has the binding `tag` (nil: no key row; the
    /// binding then does not matter, the open fails on the missing key).
    public func fileKey(fileID: [UInt8], boundBy tag: [UInt8]) throws(MetadataError) -> (record: FileKeyRecord, bound: Bool)? {
        try Self.checkFileId(fileID)
        return try locked { (c) throws(MetadataError) in
            try c.withStatement(Self.fileKeyAndLinkSQL) { (s) throws(MetadataError) -> (record: FileKeyRecord, bound: Bool)? in
                try s.bind(1, fileID)
                try s.bind(2, Self.linkRowName(tag))
                return try Self.readFileKey(s, c, binding: true, "reading a file key and a name binding")
            }
        }
    }

    /// Whether the file has any binding (used when the entry an open came through is not known).
    public func hasAnyLink(fileID: [UInt8]) throws(MetadataError) -> Bool {
        try Self.checkFileId(fileID)
        return try locked { (c) throws(MetadataError) in
            try c.withStatement("SELECT 1 FROM file_attrs WHERE file_id = ?1 AND name >= '\(Self.linkPrefix)' AND name < 'cmkfs.link/' LIMIT 1") { (s) throws(MetadataError) in
                try s.bind(1, fileID)
                return try s.step("checking a file's bindings")
            }
        }
    }
}
