import Glibc
import CLinux

/// An `AF_UNIX` address: a path in the filesystem, or (Linux) a name in the abstract namespace.
public struct UnixSocketAddress: Sendable {
    /// The longest path the kernel accepts (`sun_path` is 108 bytes with its NUL).
    public static let maxPathBytes = 107

    fileprivate var address = sockaddr_un()
    fileprivate let length: socklen_t

    /// `path`, 1…107 bytes; nil when it does not fit.
    public init?(path: String) {
        let bytes = Array(path.utf8)
        guard !bytes.isEmpty, bytes.count <= Self.maxPathBytes else { return nil }
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: bytes) }
        length = socklen_t(MemoryLayout<sockaddr_un>.size)
    }

    /// The abstract name `name` (the bytes after the leading NUL, exactly as long as given).
    public init?(abstractName name: [UInt8]) {
        guard name.count < Self.maxPathBytes else { return nil }
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.baseAddress!.advanced(by: 1).copyMemory(from: name, byteCount: name.count) }
        length = socklen_t(MemoryLayout<sa_family_t>.size + 1 + name.count)
    }

    /// A name as systemd's `$NOTIFY_SOCKET` gives it: a path, or an abstract name after `@`.
    public init?(name: String) {
        if name.hasPrefix("@") { self.init(abstractName: Array(name.utf8.dropFirst())) } else { self.init(path: name) }
    }

    fileprivate func withSockaddr<R>(_ body: (UnsafePointer<sockaddr>, socklen_t) -> R) -> R {
        withUnsafePointer(to: address) { p in p.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, length) } }
    }
}

/// Who is at the other end of a connected `AF_UNIX` socket (SO_PEERCRED).
public struct SocketCredentials: Sendable, Equatable {
    public var pid: Int32
    public var uid: UInt32
    public var gid: UInt32

    public init(pid: Int32, uid: UInt32, gid: UInt32) {
        self.pid = pid
        self.uid = uid
        self.gid = gid
    }
}

/// The socket calls, under the EINTR rule (`Retry`). Sockets are made close-on-exec.
extension FileDescriptor {
    /// socket(2) with SOCK_CLOEXEC; `type` SOCK_STREAM or SOCK_DGRAM.
    public static func socket(_ domain: Int32, _ type: __socket_type) throws(SystemError) -> FileDescriptor {
        FileDescriptor(adopting: try Retry.check("socket") { Glibc.socket(domain, Int32(type.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0) })
    }
}

extension Descriptor {
    /// connect(2). Interrupted, it is made again (an AF_UNIX connect is not left in progress);
    /// with SO_SNDTIMEO set, a full backlog throws EINPROGRESS once the timeout has passed.
    public func connect(to address: UnixSocketAddress) throws(SystemError) {
        _ = try Retry.check("connect") { address.withSockaddr { Glibc.connect(rawValue, $0, $1) } }
    }

    /// bind(2); a path address is created with the process's umask.
    public func bind(to address: UnixSocketAddress) throws(SystemError) {
        _ = try Retry.check("bind") { address.withSockaddr { Glibc.bind(rawValue, $0, $1) } }
    }

    /// listen(2).
    public func listen(backlog: Int32) throws(SystemError) {
        _ = try Retry.check("listen") { Glibc.listen(rawValue, backlog) }
    }

    /// accept4(2) with SOCK_CLOEXEC: the next connection. ECONNABORTED (a peer gone before it
    /// was accepted) and EMFILE are the caller's to handle.
    public func accept() throws(SystemError) -> FileDescriptor {
        FileDescriptor(adopting: try Retry.check("accept") { cmkfs_accept_cloexec(rawValue) })
    }

    /// One send(2); the count sent. MSG_NOSIGNAL by default: a closed peer is EPIPE, not SIGPIPE.
    public func send(_ buffer: UnsafeRawBufferPointer, flags: Int32 = Int32(MSG_NOSIGNAL)) throws(SystemError) -> Int {
        try Retry.check("send") { Glibc.send(rawValue, buffer.baseAddress, buffer.count, flags) }
    }

    /// send(2) until all of `buffer` is sent.
    public func sendAll(_ buffer: UnsafeRawBufferPointer, flags: Int32 = Int32(MSG_NOSIGNAL)) throws(SystemError) {
        var done = 0
        while done < buffer.count {
            done += try Retry.check("send") { Glibc.send(rawValue, buffer.baseAddress! + done, buffer.count - done, flags) }
        }
    }

    /// sendto(2) of one datagram to `address`; the count sent.
    public func send(_ buffer: UnsafeRawBufferPointer, to address: UnixSocketAddress,
                     flags: Int32 = Int32(MSG_NOSIGNAL)) throws(SystemError) -> Int {
        try Retry.check("sendto") { address.withSockaddr { Glibc.sendto(rawValue, buffer.baseAddress, buffer.count, flags, $0, $1) } }
    }

    /// One recv(2) into `buffer`; the count received, 0 when the peer has closed.
    public func receive(into buffer: UnsafeMutableRawBufferPointer, flags: Int32 = 0) throws(SystemError) -> Int {
        try Retry.check("recv") { Glibc.recv(rawValue, buffer.baseAddress, buffer.count, flags) }
    }

    /// shutdown(2) with SHUT_RD, SHUT_WR or SHUT_RDWR.
    public func shutdown(_ how: Int) throws(SystemError) {
        _ = try Retry.check("shutdown") { Glibc.shutdown(rawValue, Int32(how)) }
    }

    /// SO_RCVTIMEO and SO_SNDTIMEO (the latter also bounds connect on AF_UNIX): a call that
    /// waits longer throws EAGAIN.
    public func setTimeouts(milliseconds: Int) throws(SystemError) {
        var tv = timeval(tv_sec: milliseconds / 1000, tv_usec: (milliseconds % 1000) * 1000)
        for option in [SO_RCVTIMEO, SO_SNDTIMEO] {
            _ = try Retry.check("setsockopt") { setsockopt(rawValue, SOL_SOCKET, option, &tv, socklen_t(MemoryLayout<timeval>.size)) }
        }
    }

    /// The peer's pid, uid and gid (SO_PEERCRED), as they were when it connected.
    public func peerCredentials() throws(SystemError) -> SocketCredentials {
        var pid: Int32 = 0, uid: UInt32 = 0, gid: UInt32 = 0
        _ = try Retry.check("getsockopt(SO_PEERCRED)") { cmkfs_peer_credentials(rawValue, &pid, &uid, &gid) }
        return SocketCredentials(pid: pid, uid: uid, gid: gid)
    }

    /// poll(2) on this descriptor alone: the events that occurred (`revents`), empty (0) when
    /// `timeoutMilliseconds` passed first (-1: no timeout). Interrupted, it is made again with
    /// the whole timeout: callers that keep a deadline pass what is left of it each time.
    public func poll(_ events: Int16, timeoutMilliseconds: Int32) throws(SystemError) -> Int16 {
        var p = pollfd(fd: rawValue, events: events, revents: 0)
        _ = try Retry.check("poll") { Glibc.poll(&p, 1, timeoutMilliseconds) }
        return p.revents
    }

    /// Sets FD_CLOEXEC (fcntl F_SETFD), keeping the other descriptor flags.
    public func setCloseOnExec() throws(SystemError) {
        let flags = try Retry.check("fcntl") { cmkfs_fcntl_int(rawValue, F_GETFD, 0) }
        _ = try Retry.check("fcntl") { cmkfs_fcntl_int(rawValue, F_SETFD, flags | FD_CLOEXEC) }
    }
}

/// The two ends of a pipe, each closing itself; either may be consumed (closed, released)
/// on its own, so the type is frozen. (Not `Pipe`: Foundation has one.)
@frozen
public struct PipeEnds: ~Copyable {
    public var reading: FileDescriptor
    public var writing: FileDescriptor

    /// pipe2(2) with O_CLOEXEC: a child gets an end only by an explicit dup2 (posix_spawn's
    /// file actions), which clears the flag on the copy.
    public init() throws(SystemError) {
        var ends: [Int32] = [-1, -1]
        _ = try Retry.check("pipe2") { cmkfs_pipe_cloexec(&ends) }
        reading = FileDescriptor(adopting: ends[0])
        writing = FileDescriptor(adopting: ends[1])
    }
}
