import Foundation
import Glibc
import CMKCrypto
import CMKKeys

/// Serves a `SimulatedKMS` keystore on a Unix socket: the body of `cmkfs-kms serve`.
///
/// One thread per connection; requests on a connection are answered in order. The KMS logic is
/// the embedded `SimulatedKMS` itself, so both providers behave the same by construction.
public final class KMSServer: Sendable {
    /// What the operator (or a test) asked the server to get wrong on purpose.
    public struct Faults: Sendable {
        /// Added before every answer.
        public var latencyMilliseconds: Int = 0
        /// Share of requests (0…1) answered with `unavailable` ("injected failure").
        public var failFraction: Double = 0
        /// Answer every request with `refusing`.
        public var refuseAll = false
        public init(latencyMilliseconds: Int = 0, failFraction: Double = 0, refuseAll: Bool = false) {
            self.latencyMilliseconds = latencyMilliseconds
            self.failFraction = failFraction
            self.refuseAll = refuseAll
        }
    }

    public let socketPath: String
    public let kms: SimulatedKMS
    public let faults: Faults
    private let listener: Int32
    /// The uid allowed besides root: the socket's owner, i.e. this process's effective uid.
    private let ownerUID: uid_t

    public struct StartError: Error, CustomStringConvertible {
        public let description: String
    }

    /// Binds `socketPath` (refusing to replace anything but a stale socket) and listens.
    public init(socketPath: String, kms: SimulatedKMS, faults: Faults) throws(StartError) {
        self.socketPath = socketPath
        self.kms = kms
        self.faults = faults
        ownerUID = geteuid()
        var st = stat()
        if lstat(socketPath, &st) == 0 {
            guard (st.st_mode & S_IFMT) == S_IFSOCK else {
                throw StartError(description: "\(socketPath) exists and is not a socket; refusing to replace it")
            }
            if let fd = try? UnixSocket.connect(socketPath, timeoutMilliseconds: 1000) {
                close(fd)
                throw StartError(description: "another KMS is already serving \(socketPath)")
            }
            unlink(socketPath)
        }
        do { listener = try UnixSocket.listen(socketPath) } catch {
            throw StartError(description: "cannot listen on \(socketPath): \(error)")
        }
    }

    /// Accepts connections forever (the process ends by signal).
    public func run() -> Never {
        while true {
            let fd = accept(listener, nil, nil)
            if fd < 0 {
                if errno == EINTR || errno == ECONNABORTED || errno == EMFILE { usleep(1000); continue }
                Self.log("accept failed: \(String(cString: strerror(errno)))")
                usleep(10_000)
                continue
            }
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            let thread = Thread { [self] in self.serve(fd) }
            thread.stackSize = 256 * 1024
            thread.start()
        }
    }

    /// Removes the socket file (on SIGTERM/SIGINT).
    public func removeSocket() { unlink(socketPath) }

    private func serve(_ fd: Int32) {
        defer { close(fd) }
        guard let uid = UnixSocket.peerUID(fd), uid == 0 || uid == ownerUID else {
            // Read the request before refusing it: closing with it unread would reset the
            // connection, and the client would see EPIPE or ECONNRESET instead of the refusal.
            UnixSocket.setTimeouts(fd, milliseconds: 2000)
            _ = try? WireFrame.receive(from: fd)
            let refusal = WireFrame()
            refusal.u8(KMSProtocol.Status.forbidden.rawValue).string("peer uid \(UnixSocket.peerUID(fd).map(String.init) ?? "?") is not allowed")
            try? refusal.send(to: fd)
            return
        }
        while true {
            let request: WireFrame
            do { request = try WireFrame.receive(from: fd) } catch { return }
            let response = answer(request)
            do { try response.send(to: fd) } catch { return }
        }
    }

    /// The response to one request, fault injection first.
    func answer(_ request: WireFrame) -> WireFrame {
        if faults.latencyMilliseconds > 0 { usleep(UInt32(faults.latencyMilliseconds) * 1000) }
        let response = WireFrame()
        if faults.refuseAll {
            return response.u8(KMSProtocol.Status.refusing.rawValue).string("refusing all requests (--refuse-all)")
        }
        if faults.failFraction > 0, Double.random(in: 0..<1) < faults.failFraction {
            return response.u8(KMSProtocol.Status.unavailable.rawValue).string("injected failure (--fail-fraction \(faults.failFraction))")
        }
        do {
            guard try request.readU8() == KMSProtocol.version, let op = KMSProtocol.Op(rawValue: try request.readU8()) else {
                return response.u8(KMSProtocol.Status.badRequest.rawValue).string("unknown protocol version or operation")
            }
            try perform(op, request, into: response)
        } catch let error as KeyProviderError {
            let fresh = WireFrame()
            return fresh.u8(Self.status(error).rawValue).string(error.description)
        } catch {
            let fresh = WireFrame()
            return fresh.u8(KMSProtocol.Status.badRequest.rawValue).string("malformed request")
        }
        return response
    }

    private func perform(_ op: KMSProtocol.Op, _ r: WireFrame, into out: WireFrame) throws {
        switch op {
        case .ping:
            out.u8(KMSProtocol.Status.ok.rawValue)
        case .createKey:
            let key = try kms.createKey()
            out.u8(KMSProtocol.Status.ok.rawValue).string(key.keyID).u32(key.version)
        case .createVersion:
            let key = try kms.createVersion(of: try r.readString())
            out.u8(KMSProtocol.Status.ok.rawValue).string(key.keyID).u32(key.version)
        case .wrap:
            let key = KeyRef(keyID: try r.readString(), version: try r.readU32())
            var context = try Self.readContext(r)
            let dek = try r.readSecret()
            context.request = try RequestContextWire.read(r)
            // The answer carries the EDEK (28 bytes longer) in one u16-length field.
            guard dek.count <= 0xFFFF - 28 else { throw WireFrame.Malformed() }
            let edek = try kms.wrap(dek, with: key, context: context)
            out.u8(KMSProtocol.Status.ok.rawValue).bytes(edek)
        case .unwrap:
            let key = KeyRef(keyID: try r.readString(), version: try r.readU32())
            var context = try Self.readContext(r)
            let edek = try r.readArray()
            context.request = try RequestContextWire.read(r)
            let dek = try kms.unwrap(edek, with: key, context: context)
            out.u8(KMSProtocol.Status.ok.rawValue)
            _ = dek.withUnsafeBytes { out.bytes($0) }
        case .state:
            let key = KeyRef(keyID: try r.readString(), version: try r.readU32())
            out.u8(KMSProtocol.Status.ok.rawValue).u8(KMSProtocol.stateByte(try kms.state(of: key)))
        case .setState:
            let key = KeyRef(keyID: try r.readString(), version: try r.readU32())
            guard let state = KMSProtocol.state(try r.readU8()) else { throw WireFrame.Malformed() }
            try kms.setState(state, of: key)
            out.u8(KMSProtocol.Status.ok.rawValue)
        case .anchorGet:
            let volume = try Self.readVolumeID(r)
            if let anchor = try kms.auditAnchor(volumeID: volume) {
                out.u8(KMSProtocol.Status.ok.rawValue).u8(1)
                _ = anchor.withUnsafeBytes { out.bytes($0) }
            } else {
                out.u8(KMSProtocol.Status.ok.rawValue).u8(0)
            }
        case .anchorSet:
            let volume = try Self.readVolumeID(r)
            let seq = UInt64(try r.readU32()) << 32 | UInt64(try r.readU32())
            let anchor = try r.readArray()
            // The KMS keeps the latest anchor per volume and never moves it back.
            try kms.setAuditAnchor(anchor, seq: seq, volumeID: volume)
            out.u8(KMSProtocol.Status.ok.rawValue)
        }
    }

    /// The wrap binding of a request. The binding writes each id's length in one byte
    /// (`WrapContext.associatedData`), so a longer id is a malformed request, not a trap that
    /// would stop the KMS for every client.
    private static func readContext(_ r: WireFrame) throws(WireFrame.Malformed) -> WrapContext {
        let context = WrapContext(volumeID: try r.readArray(), fileID: try r.readArray())
        guard context.volumeID.count <= 255, context.fileID.count <= 255 else { throw WireFrame.Malformed() }
        return context
    }

    /// A volume id of an anchor request: 1…64 bytes (it names a file in the keystore).
    private static func readVolumeID(_ r: WireFrame) throws(WireFrame.Malformed) -> [UInt8] {
        let id = try r.readArray()
        guard !id.isEmpty, id.count <= 64 else { throw WireFrame.Malformed() }
        return id
    }

    static func status(_ error: KeyProviderError) -> KMSProtocol.Status {
        switch error {
        case .keyNotFound: .keyNotFound
        case .keyDisabled: .keyDisabled
        case .keyDestroyed: .keyDestroyed
        case .unwrapFailed: .unwrapFailed
        case .unavailable: .unavailable
        case .corrupt: .corrupt
        }
    }

    static func log(_ line: String) {
        FileHandle.standardError.write(Data("cmkfs-kms: \(line)\n".utf8))
    }
}
