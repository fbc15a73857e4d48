import CSQLite

/// The full encodings of long encrypted names (`long_names`, schema 2), keyed by their SHA-256.
extension MetadataStore {
    /// Stores the full encoding of a long name (idempotent: the row is content-addressed).
    public func setLongName(hash: [UInt8], name: String) throws(MetadataError) {
        try locked(growing: true) { (c) throws(MetadataError) in
            try c.withStatement("INSERT OR REPLACE INTO long_names(hash, name) VALUES(?1, ?2)") { (s) throws(MetadataError) in
                try s.bind(1, hash)
                try s.bind(2, name)
                try s.step("storing a long name")
            }
        }
    }

    /// The full encoding stored under `hash`, or nil.
    public func longName(hash: [UInt8]) throws(MetadataError) -> String? {
        try locked { (c) throws(MetadataError) in
            try c.withStatement("SELECT name FROM long_names WHERE hash = ?1") { (s) throws(MetadataError) in
                try s.bind(1, hash)
                return try s.step("reading a long name") ? s.text(0) : nil
            }
        }
    }

    /// Removes the row of a long name whose entry is gone (absent rows are not an error).
    public func deleteLongName(hash: [UInt8]) throws(MetadataError) {
        try locked { (c) throws(MetadataError) in
            try c.withStatement("DELETE FROM long_names WHERE hash = ?1") { (s) throws(MetadataError) in
                try s.bind(1, hash)
                try s.step("removing a long name")
            }
        }
    }
}
