import Logging
import Glibc
import CFuse3
import Synchronization
import CMKFormat
import CMKSystem

/// An open directory: a snapshot of its entries, taken whenever a reader starts from offset 0
/// (the first readdir, or after rewinddir), served by index so offsets are stable.
final class DirectoryListing: @unchecked Sendable {
    // Sound: `entries` is read and replaced only under `lock`.
    typealias Entry = BackingDirectory.Entry
    let fd: FileDescriptor
    let lock = Mutex(())
    var entries: [Entry] = []
    /// Each entry's name in the backing directory (its encryption, on an encrypted-name volume),
    /// for readdirplus, which looks every entry up.
    var backingNames: [String] = []
    /// The directory's id when names are encrypted (set once, before the listing is shared).
    var directoryID: [UInt8]?
    /// The name key left the cache since `entries` were decrypted: they were dropped, and the
    /// next readdir, from whatever offset, reads and decrypts the directory again (EACCES while
    /// the name key is refused).
    var namesForgotten = false

    init(fd: consuming FileDescriptor, directoryID: [UInt8]? = nil) {
        self.fd = fd
        self.directoryID = directoryID
    }

    /// Drops the decrypted names (the name key went); the encrypted backing names stay.
    func forgetNames() {
        lock.withLock { _ in
            guard directoryID != nil else { return }
            entries = []
            namesForgotten = true
        }
    }

    /// Re-reads the directory from its start.
    func refresh() throws(FSError) {
        do { entries = try fd.descriptor.entries() } catch { throw .system(error) }
        backingNames = entries.map(\.name)
    }
}

/// Open objects by number: `fi->fh` holds a number, not a pointer, so a stale or bogus value
/// from the kernel is an EBADF, not a crash. One table for open files' handles, one for open
/// directories.
final class NumberedTable<Value: Sendable>: Sendable {
    private struct State {
        var next: UInt64 = 1
        var values: [UInt64: Value] = [:]
    }
    private let state = Mutex(State())

    func add(_ value: Value) -> UInt64 {
        state.withLock { s in
            let id = s.next
            s.next += 1
            s.values[id] = value
            return id
        }
    }

    func get(_ id: UInt64) -> Value? { state.withLock { $0.values[id] } }

    @discardableResult
    func remove(_ id: UInt64) -> Value? { state.withLock { $0.values.removeValue(forKey: id) } }

    /// Every open object now.
    var all: [Value] { state.withLock { Array($0.values.values) } }
}

extension FileSystem {
    func opendir(_ inode: Node) throws(FSError) -> UInt64 {
        let id = try names?.directoryID(inode)
        let fd: FileDescriptor
        do { fd = try inode.descriptor.openat(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC) } catch { throw .system(error) }
        // Entries are read by the first readdir (offset 0), not here, so they are read once.
        return directories.add(DirectoryListing(fd: fd, directoryID: id))
    }

    func releasedir(_ fh: UInt64) {
        directories.remove(fh)
    }

    /// Emits entries from `offset` on until `emit` says the reply buffer is full; each entry's
    /// offset is the index of the next one.
    func readdir(_ fh: UInt64, offset: Int, _ emit: (String, stat, Int) -> Bool) throws(FSError) {
        try listing(fh, from: offset) { listing, index in
            emit(listing.entries[index].name, Self.direntStat(listing.entries[index]), index + 1)
        }
    }

    /// readdirplus: `readdir` with each entry looked up as `lookup` would (one more lookup of
    /// its inode, its attributes), so `ls -l`, `rm -r` and `find` need no LOOKUP per entry. An
    /// entry that cannot be looked up any more (removed since the listing was read) goes out
    /// without attributes (node 0), which the kernel takes as a plain entry. An entry that does
    /// not fit gives its lookup back.
    func readdirplus(_ fh: UInt64, _ dir: Node, offset: Int, _ emit: (String, fuse_entry_param, Int) -> Bool) throws(FSError) {
        try listing(fh, from: offset) { listing, index in
            let e = listing.entries[index]
            var param = fuse_entry_param()
            let generation = auditNames.current
            if e.name != "." && e.name != "..", let found = try? entry(dir, listing.backingNames[index]) {
                param = found
                noteAuditName(found, in: dir, e.name, at: generation)
            } else {
                param.attr = Self.direntStat(e)
            }
            guard emit(e.name, param, index + 1) else {
                if param.ino != 0 { inodes.forget(param.ino, count: 1) }
                return false
            }
            return true
        }
    }

    /// Runs `body` on the entries of the open directory `fh` from `offset` on (re-read from
    /// the backing directory at offset 0) until it returns false.
    private func listing(_ fh: UInt64, from offset: Int, _ body: (DirectoryListing, Int) -> Bool) throws(FSError) {
        guard let listing = directories.get(fh) else { throw .posix(EBADF) }
        try listing.lock.withLock { _ throws(FSError) in
            // A listing whose names the name key's cut dropped is read again even mid-stream: the
            // kill switch stops a listing in progress (its offsets hold while nothing changed).
            if offset == 0 || listing.namesForgotten {
                // Until decrypted, the entries are backing names: never served as names.
                listing.namesForgotten = true
                try listing.refresh()
                if let names, let id = listing.directoryID {
                    try decrypt(listing, names: names, directoryID: id)
                }
                listing.namesForgotten = false
            }
            var index = offset
            while index < listing.entries.count, body(listing, index) { index += 1 }
        }
    }

    private static func direntStat(_ e: DirectoryListing.Entry) -> stat {
        var st = stat()
        st.st_ino = e.inode
        st.st_mode = mode_t(e.type) << 12
        return st
    }
}

extension FileSystem {
    /// Replaces the backing names of a fresh listing with the names they encrypt. cmkfs's own
    /// entries (the directory id) are hidden; an entry that does not decrypt (tampered, moved
    /// in from another directory, not made by cmkfs) is skipped and logged, never shown under
    /// a wrong name. EACCES when the name key is revoked.
    func decrypt(_ listing: DirectoryListing, names: NameLayer, directoryID: [UInt8]) throws(FSError) {
        let codec = try names.codec()
        var shown: [DirectoryListing.Entry] = [], backing: [String] = []
        shown.reserveCapacity(listing.entries.count)
        backing.reserveCapacity(listing.entries.count)
        for var entry in listing.entries {
            let backingName = entry.name
            if entry.name != "." && entry.name != ".." {
                if NameCodec.isInternal(entry.name) { continue }
                do { entry.name = try volume.decryptName(entry.name, codec: codec, directoryID: directoryID) } catch {
                    FileSystem.logger.error("readdir: skipping backing entry \(entry.name) (inode \(entry.inode)): \(error)")
                    continue
                }
            }
            shown.append(entry)
            backing.append(backingName)
        }
        listing.entries = shown
        listing.backingNames = backing
        // An `rm -r` unlinks what it just listed: each UNLINK then finds its backing name here.
        names.noteRecent(directoryID, listing: zip(shown, backing).lazy
            .filter { $0.0.name != "." && $0.0.name != ".." }.map { (name: $0.0.name, backingName: $0.1) })
    }
}
