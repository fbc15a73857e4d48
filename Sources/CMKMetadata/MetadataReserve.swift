import CMKSystem
import Glibc

/// Room kept on the database's filesystem for the database itself: `meta.db-reserve`, a
/// preallocated file of `bytes` that file data written through the mount cannot take.
///
/// When the disk is full and the database needs a block (its WAL index when a process opens it,
/// a WAL frame for a key row, the deletion of an unlinked file's rows), the reserve is released
/// and the operation tried again, so a volume filled to the last block still opens, mounts and
/// lets files be deleted. It is allocated again by the next open and after every deletion of
/// files' rows (which follows unlinks that freed space).
struct MetadataReserve: Sendable {
    /// Enough for the WAL index (32 KiB), a checkpoint's growth of the database and many
    /// transactions' WAL frames.
    static let bytes = 512 << 10
    static let suffix = "-reserve"

    let path: String

    init(databasePath: String) { path = databasePath + Self.suffix }

    /// Gives the reserve's blocks back to the filesystem; true if it held any.
    func release() -> Bool {
        guard let st = try? Descriptor.cwd.stat(path), st.st_blocks > 0 else { return false }
        return (try? Descriptor.truncate(path, to: 0)) != nil
    }

    /// `refill()` when the reserve was released (or never fully allocated).
    func refillIfShort() {
        let st = try? Descriptor.cwd.stat(path)
        if st == nil || Int(st!.st_blocks) * 512 < Self.bytes { refill() }
    }

    /// Allocates the reserve (mode 0600) as far as the free space allows; never fails: without
    /// it the database still works, only not on a full disk.
    func refill() {
        guard let file = try? FileDescriptor.open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, mode: 0o600) else { return }
        try? file.descriptor.fallocate(mode: 0, offset: 0, length: Self.bytes)
    }
}
