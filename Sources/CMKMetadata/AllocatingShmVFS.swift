import CSQLite
import Glibc
import Synchronization

/// The SQLite VFS every metadata connection uses: the default unix VFS, except that each region
/// of the WAL index (`meta.db-shm`) SQLite maps is faulted in writable, which allocates its
/// blocks on disk, before SQLite stores into it.
///
/// Why: SQLite grows the -shm file by writing one byte at the end of each 4 KiB page and then
/// writes the rest of the page through a shared mapping. On a filesystem with blocks smaller
/// than 4 KiB (ext4 with 1 KiB blocks) that leaves holes inside every page; when the disk is
/// full, the first store into a hole cannot be given a block and the kernel kills the process
/// with SIGBUS (mount, fsck and `audit verify` all died that way on a full disk). Here the
/// mapped region is prefaulted with `madvise(MADV_POPULATE_WRITE)` (Linux 5.14+) right after
/// SQLite maps it: on a full disk that fails with EFAULT ("a SIGBUS would have been raised")
/// instead of killing the process, and the caller gets SQLITE_FULL. Prefaulting never changes
/// the content, so regions other processes use are safe. (Not `fallocate` on a second
/// descriptor: closing it would drop every POSIX lock SQLite holds on the file.)
///
/// Only `xOpen` (of the VFS) and `xShmMap` (of the main database file) are replaced; everything
/// else is the unix VFS's own code, called through a copy of its method table.
enum AllocatingShmVFS {
    static let name = "cmkfs-unix"
    /// MADV_POPULATE_WRITE from <linux/mman.h>.
    private static let populateWrite: Int32 = 23

    /// Addresses (pointers are not Sendable): SQLite never frees a registered VFS or its static
    /// method tables, and ours are never freed, so they stay valid for the process's life.
    private struct Tables {
        var base: UInt = 0
        var baseMethods: UInt = 0
        var patched: UInt = 0
    }
    /// The unix VFS, its main-database method table and the copy with our xShmMap; set once.
    private static let tables = Mutex(Tables())
    /// Registers the VFS once; false if SQLite has no default VFS (then the default is used).
    static let registered: Bool = register()

    private static func register() -> Bool {
        guard let base = sqlite3_vfs_find(nil) else { return false }
        let vfs = UnsafeMutablePointer<sqlite3_vfs>.allocate(capacity: 1)
        vfs.initialize(to: base.pointee)
        vfs.pointee.pNext = nil
        vfs.pointee.zName = UnsafePointer(strdup(name))
        vfs.pointee.xOpen = { _, zName, file, flags, outFlags in AllocatingShmVFS.open(zName, file, flags, outFlags) }
        tables.withLock { $0.base = UInt(bitPattern: base) }
        return sqlite3_vfs_register(vfs, 0) == SQLITE_OK
    }

    private static func open(_ zName: sqlite3_filename?, _ file: UnsafeMutablePointer<sqlite3_file>?, _ flags: Int32,
                             _ outFlags: UnsafeMutablePointer<Int32>?) -> Int32 {
        guard let base = UnsafeMutablePointer<sqlite3_vfs>(bitPattern: tables.withLock { $0.base }),
              let xOpen = base.pointee.xOpen else { return SQLITE_ERROR }
        // The unix VFS's own open, handed its own VFS object.
        let rc = xOpen(base, zName, file, flags, outFlags)
        guard rc == SQLITE_OK, flags & SQLITE_OPEN_MAIN_DB != 0, let file, let methods = file.pointee.pMethods,
              methods.pointee.iVersion >= 2, methods.pointee.xShmMap != nil else { return rc }
        let address = tables.withLock { t -> UInt in
            if t.patched == 0 {
                let copy = UnsafeMutablePointer<sqlite3_io_methods>.allocate(capacity: 1)
                copy.initialize(to: methods.pointee)
                copy.pointee.xShmMap = { file, region, size, extend, pp in AllocatingShmVFS.shmMap(file, region, size, extend, pp) }
                t.baseMethods = UInt(bitPattern: methods)
                t.patched = UInt(bitPattern: copy)
            }
            // Another method table (another locking style): leave that file alone.
            return t.baseMethods == UInt(bitPattern: methods) ? t.patched : 0
        }
        if let patched = UnsafePointer<sqlite3_io_methods>(bitPattern: address) { file.pointee.pMethods = patched }
        return rc
    }

    private static func shmMap(_ file: UnsafeMutablePointer<sqlite3_file>?, _ region: Int32, _ size: Int32, _ extend: Int32,
                               _ pp: UnsafeMutablePointer<UnsafeMutableRawPointer?>?) -> Int32 {
        guard let xShmMap = UnsafePointer<sqlite3_io_methods>(bitPattern: tables.withLock { $0.baseMethods })?.pointee.xShmMap else {
            return SQLITE_IOERR
        }
        let rc = xShmMap(file, region, size, extend, pp)
        guard rc == SQLITE_OK, let pp, let mapped = pp.pointee else { return rc }
        if madvise(mapped, Int(size), populateWrite) != 0 && errno == EFAULT {
            // Not mapped, as far as SQLite knows: it asks again on its next access. (EINVAL: a
            // kernel before 5.14, where SQLite's own behaviour is all there is.)
            pp.pointee = nil
            return SQLITE_FULL
        }
        return rc
    }
}
