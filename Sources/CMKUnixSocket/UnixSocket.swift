import Glibc
import CMKSystem

/// The `AF_UNIX` conversations of the socket KMS (CMKSocketKMS), the mount's control channel
/// (CMKControl) and the mount daemon's readiness notices (sd_notify), composed from CMKSystem's
/// socket calls: what a client, a server and a notifier each do, and the errors they report.
public enum UnixSocket {
    /// The longest socket path the kernel accepts (sun_path is 108 bytes with its NUL).
    public static let maxPathBytes = UnixSocketAddress.maxPathBytes

    /// A connected stream socket with I/O timeouts (SO_RCVTIMEO/SO_SNDTIMEO, which also bound
    /// the connect itself); a connect that times out throws ETIMEDOUT.
    public static func connect(_ path: String, timeoutMilliseconds: Int) throws(SystemError) -> FileDescriptor {
        guard let address = UnixSocketAddress(path: path) else { throw SystemError("connect", errno: Errno(rawValue: ENAMETOOLONG)) }
        let socket = try FileDescriptor.socket(AF_UNIX, SOCK_STREAM)
        try socket.descriptor.setTimeouts(milliseconds: timeoutMilliseconds)
        do { try socket.descriptor.connect(to: address) } catch {
            throw SystemError("connect", errno: error.errno == Errno(rawValue: EINPROGRESS) ? Errno(rawValue: ETIMEDOUT) : error.errno)
        }
        return socket
    }

    /// A listening stream socket at `path`, mode 0600 from the moment it exists (umask 077
    /// around bind).
    public static func listen(_ path: String, backlog: Int32 = 64) throws(SystemError) -> FileDescriptor {
        guard let address = UnixSocketAddress(path: path) else { throw SystemError("bind", errno: Errno(rawValue: ENAMETOOLONG), path: path) }
        let socket = try FileDescriptor.socket(AF_UNIX, SOCK_STREAM)
        let old = ProcessControls.setUmask(0o077)
        defer { ProcessControls.setUmask(old) }
        do { try socket.descriptor.bind(to: address) } catch { throw SystemError("bind", errno: error.errno, path: path) }
        try? Descriptor.cwd.chmod(path, mode: 0o600)
        try socket.descriptor.listen(backlog: backlog)
        return socket
    }

    /// Sends `message` as one datagram to `name`, a socket path or an abstract name given with a
    /// leading `@` (as `$NOTIFY_SOCKET` names systemd's). Throws ENAMETOOLONG for a name that
    /// does not fit an address.
    public static func sendDatagram(_ message: [UInt8], to name: String) throws(SystemError) {
        guard let address = UnixSocketAddress(name: name) else { throw SystemError("sendto", errno: Errno(rawValue: ENAMETOOLONG), path: name) }
        let socket = try FileDescriptor.socket(AF_UNIX, SOCK_DGRAM)
        let sent = try message.withUnsafeBytes { raw in
            Result { () throws(SystemError) in
                try socket.descriptor.send(raw, to: address, flags: Int32(MSG_NOSIGNAL))
            }
        }.get()
        guard sent == message.count else { throw SystemError("sendto", errno: .EIO, path: name) }
    }
}
