import Glibc

/// The few `AF_UNIX` calls the socket KMS (CMKSocketKMS) and the mount's control channel
/// (CMKControl) need; the only caller of socket/bind/connect in cmkfs.
public enum UnixSocket {
    public struct Failure: Error, CustomStringConvertible {
        public let call: String
        public let code: Int32
        public var description: String { "\(call): \(String(cString: strerror(code)))" }
    }

    /// The longest socket path the kernel accepts (sun_path is 108 bytes with its NUL).
    public static let maxPathBytes = 107

    private static func withAddress<R>(_ path: String, _ body: (UnsafePointer<sockaddr>, socklen_t) -> R) -> R? {
        let bytes = Array(path.utf8)
        guard !bytes.isEmpty, bytes.count <= maxPathBytes else { return nil }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { p in
            p.copyBytes(from: bytes)
            p[bytes.count] = 0
        }
        return withUnsafePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
    }

    private static func newSocket() throws(Failure) -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw Failure(call: "socket", code: errno) }
        return fd
    }

    /// Sets SO_RCVTIMEO and SO_SNDTIMEO (the latter also bounds `connect` on AF_UNIX).
    public static func setTimeouts(_ fd: Int32, milliseconds: Int) {
        var tv = timeval(tv_sec: milliseconds / 1000, tv_usec: (milliseconds % 1000) * 1000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    /// A connected client socket with I/O timeouts, or the failing call and errno.
    public static func connect(_ path: String, timeoutMilliseconds: Int) throws(Failure) -> Int32 {
        let fd = try newSocket()
        setTimeouts(fd, milliseconds: timeoutMilliseconds)
        var rc: Int32 = -1
        repeat {
            rc = withAddress(path) { Glibc.connect(fd, $0, $1) } ?? { errno = ENAMETOOLONG; return -1 }()
        } while rc != 0 && errno == EINTR
        guard rc == 0 else {
            let e = errno
            close(fd)
            throw Failure(call: "connect", code: e == EINPROGRESS ? ETIMEDOUT : e)
        }
        return fd
    }

    /// A listening socket at `path`, mode 0600 from the moment it exists (umask 077 around bind).
    public static func listen(_ path: String, backlog: Int32 = 64) throws(Failure) -> Int32 {
        let fd = try newSocket()
        let old = umask(0o077)
        let rc = withAddress(path) { bind(fd, $0, $1) } ?? { errno = ENAMETOOLONG; return -1 }()
        umask(old)
        guard rc == 0 else { let e = errno; close(fd); throw Failure(call: "bind \(path)", code: e) }
        chmod(path, 0o600)
        guard Glibc.listen(fd, backlog) == 0 else { let e = errno; close(fd); throw Failure(call: "listen", code: e) }
        return fd
    }

    /// The peer's uid from SO_PEERCRED.
    public static func peerUID(_ fd: Int32) -> uid_t? { peerCredentials(fd)?.uid }

    /// The peer's pid, uid and gid from SO_PEERCRED (`struct ucred { pid_t pid; uid_t uid; gid_t gid; }`,
    /// which glibc declares only under _GNU_SOURCE).
    public static func peerCredentials(_ fd: Int32) -> (pid: Int32, uid: UInt32, gid: UInt32)? {
        var cred: (Int32, UInt32, UInt32) = (0, 0, 0)
        var len = socklen_t(MemoryLayout<(Int32, UInt32, UInt32)>.size)
        guard getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0, len == 12 else { return nil }
        return (cred.0, cred.1, cred.2)
    }
}
