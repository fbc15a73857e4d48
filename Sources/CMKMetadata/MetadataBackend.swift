// The metadata a volume keeps beside its content, as protocols split by concern. `MetadataStore`
// (SQLite, `meta.db`) is the first implementation; a second backend (PostgreSQL, say) conforms to
// the same protocols, passes the contract suites in Tests/CMKMetadataTests/Contract, and is chosen
// in one place (`MetadataBackends` in CMKVolume). Callers take the narrowest protocol they need.
//
// Every requirement is synchronous and throws `MetadataError`: a backend maps its own failures
// onto those cases (`.full` for "no room", `.busy` for lock contention, `.io` for the rest, keeping
// the backend's message) so the volume and FUSE layers keep one set of rules for them.
// Implementations are thread-safe reference types: one instance serves every FUSE thread.
// File ids are 16 bytes; any other length is refused (`MetadataError.io`, misuse).

/// Volume-level facts and cursors: small named values (volume id, wrapped volume secrets, the
/// progress records of rotation and rekey, rekey journal entries).
public protocol VolumeFactStore: AnyObject, Sendable {
    /// Sets (inserting or overwriting) the value for `key`.
    func setMeta(_ key: String, _ value: [UInt8]) throws(MetadataError)
    /// The value for `key`, or nil if it was never set.
    func meta(_ key: String) throws(MetadataError) -> [UInt8]?
    /// Removes the value for `key` (absent is fine).
    func deleteMeta(_ key: String) throws(MetadataError)
    /// Every key starting with `prefix`, sorted.
    func metaKeys(withPrefix prefix: String) throws(MetadataError) -> [String]
}

/// The master-key versions the volume knows and their states.
public protocol KeyVersionStore: AnyObject, Sendable {
    /// Records a version; `.exists` if that key id and version are already recorded.
    func addKeyVersion(_ record: KeyVersionRecord) throws(MetadataError)
    /// Changes a recorded version's state; `.notFound` if it is not recorded.
    func setKeyVersionState(keyId: String, version: Int, _ newState: KeyVersionState) throws(MetadataError)
    /// Every recorded version, ordered by version (then key id).
    func keyVersions() throws(MetadataError) -> [KeyVersionRecord]
    /// The active version, or nil; the highest if several are active.
    func activeKeyVersion() throws(MetadataError) -> KeyVersionRecord?
}

/// Per-file wrapped data keys (EDEK rows). `fileKey` is read on every open that misses the key
/// cache: keep it one lookup.
public protocol FileKeyStore: AnyObject, Sendable {
    /// Stores a new file's wrapped key (and, with `linkTag`, its first name binding) atomically;
    /// `.exists` if the file has one. With `onlyIfActive`, writes nothing and returns false unless
    /// the record's version is the active one at commit (a rotation by another process wins).
    @discardableResult
    func insertFileKey(fileID: [UInt8], _ record: FileKeyRecord, onlyIfActive: Bool, linkTag: [UInt8]?) throws(MetadataError) -> Bool
    /// The file's wrapped key, or nil if it has none.
    func fileKey(fileID: [UInt8]) throws(MetadataError) -> FileKeyRecord?
    /// Removes every row of the file (key, xattrs, bindings); absent is not an error.
    func deleteFile(fileID: [UInt8]) throws(MetadataError)
    /// Removes every row of each file, atomically (a batch of unlinks).
    func deleteFiles(fileIDs: [[UInt8]]) throws(MetadataError)
    /// Installs a rekeyed file's new key and re-sealed xattrs and removes the journal fact
    /// `journalKey`, atomically. False, writing nothing, if `record`'s version is no longer active.
    func installRekeyedKey(fileID: [UInt8], _ record: FileKeyRecord, xattrs: [(name: String, value: [UInt8])],
                           journalKey: String) throws(MetadataError) -> Bool
    /// The number of files that have a key.
    func fileCount() throws(MetadataError) -> Int
    /// How many keys each master-key version wraps (versions with none are absent).
    func edekCounts() throws(MetadataError) -> [Int: Int]
    /// The ids of the files wrapped under `version`, in file-id (bytewise) order.
    func fileIDs(version: Int) throws(MetadataError) -> [[UInt8]]
}

extension FileKeyStore {
    /// Stores a new file's wrapped key, whatever version is active.
    @discardableResult
    public func insertFileKey(fileID: [UInt8], _ record: FileKeyRecord) throws(MetadataError) -> Bool {
        try insertFileKey(fileID: fileID, record, onlyIfActive: false, linkTag: nil)
    }
}

/// Master-key rotation: switching the active version and re-wrapping keys in resumable batches.
public protocol KeyRotationStore: FileKeyStore, KeyVersionStore {
    /// Atomically: every active version deactivated, `newVersion` recorded active, `meta` set.
    func beginRotation(to newVersion: KeyVersionRecord, meta: [String: [UInt8]]) throws(MetadataError)
    /// Up to `limit` keys under `version` whose file id sorts after `after`, in file-id order.
    func wrappedKeys(version: Int, after: [UInt8]?, limit: Int) throws(MetadataError) -> [WrappedKey]
    /// Stores re-wrapped keys (each only if its row still holds `oldEdek`) and `meta`
    /// atomically; returns how many rows changed.
    /// `newKeyID`: the new version is another provider key; each changed file's key-id row follows.
    func storeRewrapped(_ batch: [Rewrap], newVersion: Int, newKeyID: String?, meta: [String: [UInt8]]) throws(MetadataError) -> Int
}

extension KeyRotationStore {
    /// `storeRewrapped` within one provider key.
    public func storeRewrapped(_ batch: [Rewrap], newVersion: Int, meta: [String: [UInt8]]) throws(MetadataError) -> Int {
        try storeRewrapped(batch, newVersion: newVersion, newKeyID: nil, meta: meta)
    }
}

/// User extended attributes (values already sealed by the caller). Names under `cmkfs.` are
/// reserved: refused on set, absent on read and list.
public protocol XattrStore: AnyObject, Sendable {
    /// Sets an xattr; `.create` fails with `.exists` if set, `.replace` with `.notFound` if not.
    func setXattr(fileID: [UInt8], name: String, value: [UInt8], mode: XattrSetMode) throws(MetadataError)
    /// The xattr's value, or nil.
    func xattr(fileID: [UInt8], name: String) throws(MetadataError) -> [UInt8]?
    /// The file's xattr names, sorted by their UTF-8 bytes.
    func xattrNames(fileID: [UInt8]) throws(MetadataError) -> [String]
    /// Removes an xattr; `.notFound` if it is not set.
    func removeXattr(fileID: [UInt8], name: String) throws(MetadataError)
}

/// The full encodings of long encrypted names, content-addressed by their SHA-256.
public protocol LongNameStore: AnyObject, Sendable {
    /// Stores a long name (idempotent).
    func setLongName(hash: [UInt8], name: String) throws(MetadataError)
    /// The name stored under `hash`, or nil.
    func longName(hash: [UInt8]) throws(MetadataError) -> String?
    /// Removes a long name (absent is fine).
    func deleteLongName(hash: [UInt8]) throws(MetadataError)
    /// Every stored hash, sorted.
    func allLongNameHashes() throws(MetadataError) -> [[UInt8]]
}

/// Name bindings: which directory entries (by MAC tag) a regular file may be reached through.
public protocol NameBindingStore: AnyObject, Sendable {
    /// Adds `add` and removes `remove`, for any number of files, atomically (a rename).
    func changeLinks(add: [(fileID: [UInt8], tag: [UInt8])], remove: [(fileID: [UInt8], tag: [UInt8])]) throws(MetadataError)
    /// Whether the file has the binding `tag`.
    func hasLink(fileID: [UInt8], tag: [UInt8]) throws(MetadataError) -> Bool
    /// Whether the file has any binding.
    func hasAnyLink(fileID: [UInt8]) throws(MetadataError) -> Bool
    /// The file's wrapped key (nil if it has none) and whether it has the binding `tag`, read
    /// in one statement: a key-miss open through an entry not yet checked needs both.
    func fileKey(fileID: [UInt8], boundBy tag: [UInt8]) throws(MetadataError) -> (record: FileKeyRecord, bound: Bool)?
}

extension NameBindingStore {
    /// Adds bindings, removing none.
    public func changeLinks(add: [(fileID: [UInt8], tag: [UInt8])]) throws(MetadataError) {
        try changeLinks(add: add, remove: [])
    }
}

/// Durability, whole-store reads for fsck, and closing.
public protocol MetadataMaintenance: AnyObject, Sendable {
    /// Makes every committed change durable against a power cut now (cheap when nothing changed).
    func makeDurable() throws(MetadataError)
    /// Moves the backend's housekeeping (SQLite: the WAL's checkpoints) off the threads that
    /// write, onto whoever calls `checkpointIfDue` (a mount's group-commit thread).
    func deferCheckpoints() throws(MetadataError)
    /// The housekeeping `deferCheckpoints` deferred, if it is due; cheap when it is not.
    func checkpointIfDue() throws(MetadataError)
    /// Every file id that has any row, in file-id order.
    func allFileIds() throws(MetadataError) -> [[UInt8]]
    /// Every row of a file, by name (what fsck saves before removing an orphan).
    func rows(fileID: [UInt8]) throws(MetadataError) -> [FileRow]
    /// Releases the backend; idempotent; later calls throw.
    func close()
}

/// Everything a volume needs from its metadata backend.
public typealias MetadataBackend = VolumeFactStore & KeyRotationStore & XattrStore & LongNameStore
    & NameBindingStore & MetadataMaintenance

extension MetadataStore: VolumeFactStore, KeyVersionStore, FileKeyStore, KeyRotationStore, XattrStore,
                         LongNameStore, NameBindingStore, MetadataMaintenance {}
