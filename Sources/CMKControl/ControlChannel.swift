import Foundation
import Synchronization
import CMKKeyService
import CMKSystem
import CMKUnixSocket

/// Who is on the other end of a control connection (SO_PEERCRED): CMKSystem's type, named for
/// the control channel.
public typealias PeerCredentials = SocketCredentials

/// Why a control request got no answer (the mount's own refusals are answers: `ok` false).
public enum ControlChannelError: Error, CustomStringConvertible {
    /// The socket could not be connected (the failing call and errno).
    case unreachable(String)
    /// The request could not be written whole.
    case sendFailed
    /// The mount closed the connection or answered something that is not a response.
    case noAnswer

    public var description: String {
        switch self {
        case .unreachable(let why): why
        case .sendFailed: "the request could not be sent"
        case .noAnswer: "no answer"
        }
    }
}

/// The control socket's transport, for both ends: one JSON request line per connection, one
/// JSON answer line back (docs/control-protocol.md). What a request does is the server's
/// handler's business (CMKFuse); this type only moves lines.
public enum ControlChannel {
    /// The longest socket path the kernel accepts.
    public static let maxPathBytes = UnixSocket.maxPathBytes
    /// Connections served at once; one more is answered "busy" and closed at once, so a flood
    /// of idle clients costs threads up to this bound and never blocks the accept loop.
    public static let maxConnections = 32
    /// A connection must deliver its request line within this long (in total, not per read).
    public static let requestTimeoutMilliseconds = 5000
    /// The longest request line served.
    static let maxRequestBytes = 65536
    /// Connections being served now (one control server per process).
    private static let active = Atomic<Int>(0)

    // MARK: client

    /// Sends `request` to the mount listening at `socket` and returns its answer (whether `ok`
    /// or not).
    public static func send(_ request: ControlRequest, to socket: String,
                            timeoutMilliseconds: Int) throws(ControlChannelError) -> ControlResponse {
        let connection: FileDescriptor
        do { connection = try UnixSocket.connect(socket, timeoutMilliseconds: timeoutMilliseconds) } catch {
            throw .unreachable("\(error)")
        }
        let fd = connection.descriptor
        guard var data = try? JSONEncoder().encode(request) else { throw .sendFailed }
        data.append(0x0A)
        do { try data.withUnsafeBytes { raw in Result { () throws(SystemError) in try fd.writeAll(raw) } }.get() } catch {
            throw .sendFailed
        }
        var reply = Data()
        var byte: UInt8 = 0
        while (try? withUnsafeMutableBytes(of: &byte) { raw in try fd.read(into: raw) }) == 1 && byte != 0x0A { reply.append(byte) }
        guard let response = try? JSONDecoder().decode(ControlResponse.self, from: reply) else { throw .noAnswer }
        return response
    }

    // MARK: server

    /// Binds `socket` (mode 0600) and serves it on threads of its own until the process ends:
    /// one thread accepts, each connection is served on a thread of its own, so an idle or slow
    /// client never delays a flush. Only root and `owner` are served; anyone else is answered
    /// "permission denied". `handle` answers each request that decodes.
    public static func serve(_ socket: String, owner: uid_t,
                             handle: @escaping @Sendable (ControlRequest, PeerCredentials) -> ControlResponse) throws(ControlChannelError) {
        try? Descriptor.cwd.unlink(socket)
        // Served until the process ends: the listener is never closed.
        let listener: Descriptor
        do { listener = Descriptor(rawValue: try UnixSocket.listen(socket, backlog: 64).release()) } catch { throw .unreachable("\(error)") }
        Thread.detachNewThread {
            while true {
                let client: Int32
                do { client = try listener.accept().release() } catch { usleep(10_000); continue }
                guard Self.active.add(1, ordering: .sequentiallyConsistent).newValue <= maxConnections else {
                    Self.active.subtract(1, ordering: .sequentiallyConsistent)
                    let turnedAway = FileDescriptor(adopting: client)
                    try? turnedAway.descriptor.setTimeouts(milliseconds: 100)
                    reply(turnedAway.descriptor, ControlResponse(ok: false, error: "busy: \(maxConnections) control connections are open; try again"))
                    continue
                }
                Thread.detachNewThread {
                    do {
                        let connection = FileDescriptor(adopting: client)
                        serveConnection(connection.descriptor, owner: owner, handle: handle)
                    }
                    Self.active.subtract(1, ordering: .sequentiallyConsistent)
                }
            }
        }
    }

    private static func serveConnection(_ client: Descriptor, owner: uid_t,
                                        handle: (ControlRequest, PeerCredentials) -> ControlResponse) {
        try? client.setTimeouts(milliseconds: requestTimeoutMilliseconds)
        guard let cred = try? client.peerCredentials(),
              cred.uid == 0 || cred.uid == owner else {
            reply(client, ControlResponse(ok: false, error: "permission denied: only root or the volume's owner may control the mount"))
            return
        }
        guard let line = readLine(client, deadline: monotonicNow() + Double(requestTimeoutMilliseconds) / 1000) else {
            reply(client, ControlResponse(ok: false, error: "malformed request"))
            return
        }
        let request: ControlRequest
        do { request = try JSONDecoder().decode(ControlRequest.self, from: line) } catch let error as ControlRequestError {
            reply(client, ControlResponse(ok: false, error: error.message))
            return
        } catch {
            reply(client, ControlResponse(ok: false, error: "malformed request"))
            return
        }
        reply(client, handle(request, cred))
    }

    /// One request line, or nil when the peer closes, sends too much, or is not done by `deadline`
    /// (a client trickling one byte at a time cannot hold its thread longer than that).
    private static func readLine(_ fd: Descriptor, deadline: Double) -> Data? {
        var data = Data()
        var byte: UInt8 = 0
        while data.count < maxRequestBytes {
            let left = Int32((deadline - monotonicNow()) * 1000)
            guard left > 0, let events = try? fd.poll(Int16(POLLIN), timeoutMilliseconds: left), events != 0 else { return nil }
            let n = (try? withUnsafeMutableBytes(of: &byte) { raw in try fd.read(into: raw) }) ?? -1
            if n <= 0 { return data.isEmpty ? nil : data }
            if byte == 0x0A { return data }
            data.append(byte)
        }
        return nil
    }

    /// Writes the answer line; a client gone or too slow (the send timeout) gets nothing.
    private static func reply(_ fd: Descriptor, _ response: ControlResponse) {
        guard var data = try? JSONEncoder().encode(response) else { return }
        data.append(0x0A)
        _ = data.withUnsafeBytes { raw in Result { () throws(SystemError) in try fd.writeAll(raw) } }
    }
}
