#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import CSQLite

// POSIX helpers kept at file scope: inside MetadataStore the name `open` means `open(at:)`.

/// Creates `path` as an empty file with mode 0600, failing if anything already exists there.
///
/// SQLite's own open cannot do O_EXCL, and it would create the file with the umask's mode; the
/// database holds wrapped keys, so it starts private. SQLite gives its -wal and -shm files the
/// database file's mode, so they inherit 0600.
func createExclusiveFile(_ path: String) throws(MetadataError) {
    let fd = open(path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0o600)
    guard fd >= 0 else {
        let code = errno
        switch code {
        case EEXIST: throw .exists
        case ENOSPC, EDQUOT: throw .full
        default:
            throw .io(code: SQLITE_CANTOPEN, message: "cannot create \(path): \(String(cString: strerror(code)))")
        }
    }
    close(fd)
}

/// Whether nothing at all exists at `path` (other stat failures are left for SQLite to report).
func pathIsMissing(_ path: String) -> Bool {
    var info = stat()
    return stat(path, &info) != 0 && errno == ENOENT
}

/// Removes a half-created database and the companions SQLite may have made next to it.
func removeDatabaseFiles(_ path: String) {
    for suffix in ["", "-wal", "-shm", "-journal", MetadataReserve.suffix] {
        unlink(path + suffix)
    }
}
