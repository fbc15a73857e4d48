import CMKFormat

/// Backing names the mount made or read lately, by (directory id, plaintext name), so an
/// UNLINK after a readdir, or a CREATE after its negative LOOKUP, finds the backing name
/// without sealing the name again (AES-SIV and base64url, ~3 µs, the dearest part of an
/// `rm -rf`'s UNLINK before the system call).
///
/// Sound because a backing name is a pure function of the name key, the directory's id and
/// the plaintext name (SIV is deterministic, its padding and base64url are canonical and their
/// decoders strict, so a name that decrypts is exactly what `encrypt` makes of its plaintext).
/// The name key never changes for a volume (rotation re-wraps it), directory ids never change
/// and a new directory gets a new one, so nothing done to the tree (rename, hard links, unlink
/// and recreate, `cmkfs` commands in other processes) can make an entry here wrong. The
/// entries hold plaintext names, so they live with the keyed codec and go with it when the
/// name key leaves the cache (`NameLayer.dropKeyedCodec`); and they are used only after the
/// name key's lease answered (`NameLayer.codec()`), so a revoked name key stops name
/// operations exactly as without them.
///
/// Long names (the `L.` form, whose full encoding lives in meta.db) are not kept: a create
/// needs their full encoding too, and they are rare.
struct RecentNames {
    /// The directory id as two words: hashing a byte array feeds the hasher byte by byte, which
    /// cost as much as the lookup saved.
    struct Key: Hashable {
        let high: UInt64
        let low: UInt64
        let name: String

        init(directoryID id: [UInt8], name: String) {
            (high, low) = id.withUnsafeBytes { raw in
                raw.count == 16 ? (raw.loadUnaligned(as: UInt64.self), raw.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
                    // Ids are 16 bytes (`NameCodec.directoryIDSize`); anything else is never kept.
                    : (0, 0)
            }
            self.name = name
        }

        var valid: Bool { high | low != 0 }

        /// By bytes: a POSIX name is bytes, and `String`'s own `==` and hash follow Unicode
        /// canonical equivalence, which would make "caf\u{e9}" (NFC) and "cafe\u{301}" (NFD),
        /// two files, one entry.
        static func == (a: Key, b: Key) -> Bool {
            a.high == b.high && a.low == b.low && a.name.utf8.elementsEqual(b.name.utf8)
        }

        func hash(into hasher: inout Hasher) {
            hasher.combine(high)
            hasher.combine(low)
            var bytes = name  // withUTF8 is mutating: it may make a bridged string native first
            bytes.withUTF8 { hasher.combine(bytes: UnsafeRawBufferPointer($0)) }
        }
    }

    /// Bounded: 4,096 short names are a few hundred KiB at most; when full the whole table is
    /// dropped (a directory's entries are used right after its readdir, so little is lost).
    static let capacity = 4096
    private var backing: [Key: String] = [:]

    /// The backing name of `name` in the directory with id `directoryID`, if kept.
    func find(_ directoryID: [UInt8], _ name: String) -> String? {
        backing[Key(directoryID: directoryID, name: name)]
    }

    /// Keeps `backingName` as the encryption of `name` in the directory with id `directoryID`.
    mutating func note(_ directoryID: [UInt8], _ name: String, backingName: String) {
        let key = Key(directoryID: directoryID, name: name)
        guard key.valid, !NameCodec.isLong(backingName) else { return }
        if backing.count >= Self.capacity { backing.removeAll(keepingCapacity: true) }
        backing[key] = backingName
    }

    /// The entry is gone (unlinked, removed, renamed away): its name need not be kept.
    mutating func drop(_ directoryID: [UInt8], _ name: String) {
        backing.removeValue(forKey: Key(directoryID: directoryID, name: name))
    }

    var count: Int { backing.count }
}
