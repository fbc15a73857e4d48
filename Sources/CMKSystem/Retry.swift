import Glibc

/// The one EINTR rule of the project (docs/design-notes.md, "System calls").
///
/// Every call made through CMKSystem that fails with EINTR is made again at once, as often as
/// it takes, so no caller ever sees EINTR, and none retries by itself. The daemon installs no
/// signal handler that expects a call to be cut short (shutdown goes through the FUSE session
/// and the control socket), so giving up on EINTR would only turn a harmless interruption (a
/// stopped-and-continued process, a profiler's signal) into an I/O error. Short transfers are
/// not errors and are not retried here: `preadFully`/`pwriteAll`/`writeAll` loop on them.
///
/// The one exception is close(2): Linux releases the descriptor before it can be interrupted,
/// so a retry could close a descriptor another thread has just been given. close is made once
/// and its EINTR ignored.
@usableFromInline
enum Retry {
    /// `body()` until it does not fail with EINTR; its result, -1 on failure with errno set.
    @inlinable @inline(__always)
    static func onInterrupt<R: BinaryInteger>(_ body: () -> R) -> R {
        while true {
            let result = body()
            if result == -1 && Glibc.errno == Glibc.EINTR { continue }
            return result
        }
    }

    /// `body()` under the EINTR rule; its result, or a `SystemError` naming `call` and `path`.
    @inlinable @inline(__always)
    static func check<R: BinaryInteger>(_ call: String, path: String? = nil, _ body: () -> R) throws(SystemError) -> R {
        let result = onInterrupt(body)
        if result == -1 { throw SystemError(call, errno: .current, path: path) }
        return result
    }

    /// For calls that return an errno instead of setting it (0 on success).
    @inlinable @inline(__always)
    static func checkReturned(_ call: String, path: String? = nil, _ body: () -> Int32) throws(SystemError) {
        while true {
            let rc = body()
            if rc == 0 { return }
            if rc == Glibc.EINTR { continue }
            throw SystemError(call, errno: Errno(rawValue: rc), path: path)
        }
    }
}
