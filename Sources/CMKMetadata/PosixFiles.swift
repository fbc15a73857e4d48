import Glibc
import CSQLite
import CMKSystem

// POSIX helpers kept at file scope: inside MetadataStore the name `open` means `open(at:)`.

/// Creates `path` as an empty file with mode 0600, failing if anything already exists there.
///
/// SQLite's own open cannot do O_EXCL, and it would create the file with the umask's mode; the
/// database holds wrapped keys, so it starts private. SQLite gives its -wal and -shm files the
/// database file's mode, so they inherit 0600.
func createExclusiveFile(_ path: String) throws(MetadataError) {
    do { _ = try FileDescriptor.open(path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, mode: 0o600) } catch {
        switch error.errno {
        case .EEXIST: throw .exists
        case .ENOSPC, .EDQUOT: throw .full
        default: throw .io(code: SQLITE_CANTOPEN, message: "cannot create \(path): \(error.errno)")
        }
    }
}

/// Whether nothing at all exists at `path` (other stat failures are left for SQLite to report).
func pathIsMissing(_ path: String) -> Bool {
    do { _ = try Descriptor.cwd.stat(path); return false } catch { return error.errno == .ENOENT }
}

/// Removes a half-created database and the companions SQLite may have made next to it.
func removeDatabaseFiles(_ path: String) {
    for suffix in ["", "-wal", "-shm", "-journal", MetadataReserve.suffix] {
        try? Descriptor.cwd.unlink(path + suffix)
    }
}
