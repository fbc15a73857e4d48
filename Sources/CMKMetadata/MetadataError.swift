import CSQLite

/// A failure in the metadata database.
///
/// Messages name the database path and the operation, never the values bound to a statement
/// (file ids, key ids, xattr names and values stay out of logs).
public enum MetadataError: Error, Equatable, CustomStringConvertible {
    /// The row, or the database file itself, does not exist.
    case notFound
    /// A create-style write found the row (or the database file) already there.
    case exists
    /// The file is not a SQLite database, is malformed, or does not hold the cmkfs schema.
    case corrupt(String)
    /// The database was written by a newer cmkfs; this build refuses to touch it.
    case newerSchema(found: Int, supported: Int)
    /// Any other SQLite or system failure; `code` is the (extended) SQLite result code.
    case io(code: Int32, message: String)
    /// The disk holding the database is full (`SQLITE_FULL`).
    case full
    /// Another connection holds the lock longer than the busy timeout.
    case busy

    public var description: String {
        switch self {
        case .notFound: return "metadata not found"
        case .exists: return "metadata already exists"
        case .corrupt(let detail): return "metadata database unusable: \(detail)"
        case .newerSchema(let found, let supported):
            return "metadata database has schema version \(found) but this cmkfs supports up to \(supported); upgrade cmkfs"
        case .io(let code, let message): return "metadata database error: \(message) (SQLite code \(code))"
        case .full: return "the disk holding the metadata database is full"
        case .busy: return "the metadata database is locked by another process"
        }
    }

    /// Misuse of the store by its caller (closed store, malformed argument); a programmer error
    /// surfaced as a value so a FUSE daemon returns EIO instead of crashing.
    static func misuse(_ message: String) -> MetadataError {
        .io(code: SQLITE_MISUSE, message: message)
    }

    /// Maps a SQLite result code to the case a caller can act on.
    ///
    /// - Parameters:
    ///   - code: the result code returned by the failing call (extended codes are on).
    ///   - db: the connection, for its error message; nil when opening failed before one existed.
    ///   - path: the database path, so corruption reports say which file is bad.
    ///   - context: what the store was doing, in words for a person.
    static func sqlite(_ code: Int32, db: OpaquePointer?, path: String, context: String) -> MetadataError {
        // SQLite's messages carry table and column names, never bound values, so they are safe to show.
        let detail: String
        if let db, let message = sqlite3_errmsg(db) {
            detail = String(cString: message)
        } else if let message = sqlite3_errstr(code) {
            detail = String(cString: message)
        } else {
            detail = "unknown error"
        }
        switch code & 0xff {
        case SQLITE_CORRUPT, SQLITE_NOTADB:
            return .corrupt("\(path): \(context): \(detail)")
        case SQLITE_FULL:
            return .full
        case SQLITE_IOERR where code == sqliteIOErrShmSize:
            // SQLite could not extend the WAL index file: on a full disk that is ENOSPC.
            return .full
        case SQLITE_BUSY, SQLITE_LOCKED:
            return .busy
        case SQLITE_CONSTRAINT where code == sqliteConstraintPrimaryKey || code == sqliteConstraintUnique:
            // Every key in the schema is a natural key, so a key clash means "already there".
            return .exists
        default:
            return .io(code: code, message: "\(path): \(context): \(detail)")
        }
    }
}

// Spelled out because Swift does not import the SQLITE_CONSTRAINT_* macros (expressions over
// other macros); values from sqlite3.h.
let sqliteConstraintPrimaryKey: Int32 = SQLITE_CONSTRAINT | (6 << 8)
let sqliteConstraintUnique: Int32 = SQLITE_CONSTRAINT | (8 << 8)
let sqliteIOErrShmSize: Int32 = SQLITE_IOERR | (19 << 8)
/// SQLITE_IOERR_FSYNC (a macro, not imported): a sync of a database file failed.
let sqliteIOErrFsync: Int32 = SQLITE_IOERR | (4 << 8)
