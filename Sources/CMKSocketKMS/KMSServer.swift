import Foundation
import Glibc
import CMKCrypto
import CMKKeys
import CMKSystem
import CMKUnixSocket

/// Serves master keys on a Unix socket: the body of `cmkfs-kms serve`.
///
/// One thread per connection; requests on a connection are answered in order. The keys are a
/// `SimulatedKMS` keystore (the embedded provider itself, so both behave the same by
/// construction) or a PKCS#11 token (`PKCS11Provider`: the server fronts an HSM); either way
/// the server asks a `KeyProvider`, which also keeps the audit anchors.
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
    /// Where the master keys (and the audit anchors) are.
    public let kms: any KeyProvider
    public let faults: Faults
    /// Where each answered request is recorded before its answer is sent (nil: not recorded).
    public let audit: KMSAuditLog?
    private let listener: FileDescriptor
    /// The uid allowed besides root: the socket's owner, i.e. this process's effective uid.
    private let ownerUID: uid_t

    public struct StartError: Error, CustomStringConvertible {
        public let description: String
    }

    /// Binds `socketPath` (refusing to replace anything but a stale socket) and listens.
    public init(socketPath: String, kms: any KeyProvider, faults: Faults, audit: KMSAuditLog? = nil) throws(StartError) {
        self.socketPath = socketPath
        self.kms = kms
        self.faults = faults
        self.audit = audit
        ownerUID = geteuid()
        if let st = try? Descriptor.cwd.stat(socketPath, flags: AT_SYMLINK_NOFOLLOW) {
            guard (st.st_mode & S_IFMT) == S_IFSOCK else {
                throw StartError(description: "\(socketPath) exists and is not a socket; refusing to replace it")
            }
            if (try? UnixSocket.connect(socketPath, timeoutMilliseconds: 1000)) != nil {
                throw StartError(description: "another KMS is already serving \(socketPath)")
            }
            try? Descriptor.cwd.unlink(socketPath)
        }
        do { listener = try UnixSocket.listen(socketPath) } catch {
            throw StartError(description: "cannot listen on \(socketPath): \(error)")
        }
    }

    /// Accepts connections forever (the process ends by signal).
    public func run() -> Never {
        while true {
            let fd: Int32
            do { fd = try listener.descriptor.accept().release() } catch {
                if error.errno.rawValue == ECONNABORTED || error.errno.rawValue == EMFILE { usleep(1000); continue }
                Self.log("accept failed: \(error.errno)")
                usleep(10_000)
                continue
            }
            let thread = Thread { [self] in
                let connection = FileDescriptor(adopting: fd)
                self.serve(connection.descriptor)
            }
            thread.stackSize = 256 * 1024
            thread.start()
        }
    }

    /// Removes the socket file (on SIGTERM/SIGINT).
    public func removeSocket() { try? Descriptor.cwd.unlink(socketPath) }

    private func serve(_ fd: Descriptor) {
        let peer = try? fd.peerCredentials()
        guard let uid = peer?.uid, uid == 0 || uid == ownerUID else {
            // Read the request before refusing it: closing with it unread would reset the
            // connection, and the client would see EPIPE or ECONNRESET instead of the refusal.
            try? fd.setTimeouts(milliseconds: 2000)
            _ = try? WireFrame.receive(from: fd)
            let refusal = WireFrame()
            let message = "peer uid \(peer.map { String($0.uid) } ?? "?") is not allowed"
            refusal.u8(KMSProtocol.Status.forbidden.rawValue).string(message)
            var entry = Self.entry(peer)
            Self.finish(&entry, .forbidden, message)
            // A refused peer is recorded when it can be; the refusal stands either way.
            try? audit?.record(entry)
            try? refusal.send(to: fd)
            return
        }
        while true {
            let request: WireFrame
            do { request = try WireFrame.receive(from: fd) } catch { return }
            let response = answer(request, peer: peer)
            do { try response.send(to: fd) } catch { return }
        }
    }

    /// The response to one request, fault injection first, recorded in the audit log before it
    /// is returned; a request that cannot be recorded is refused instead (`unavailable`).
    func answer(_ request: WireFrame, peer: SocketCredentials? = nil) -> WireFrame {
        var entry = Self.entry(peer)
        let response = respond(request, &entry)
        // A ping (status, health checks) asks for no key and names nothing: not recorded.
        guard let audit, entry.kmsOp != "ping" else { return response }
        do { try audit.record(entry) } catch {
            Self.log("refusing a request it cannot record: \(error)")
            return WireFrame().u8(KMSProtocol.Status.unavailable.rawValue).string("the KMS cannot record the request in its audit log")
        }
        return response
    }

    private func respond(_ request: WireFrame, _ entry: inout KMSAuditEntry) -> WireFrame {
        if faults.latencyMilliseconds > 0 { usleep(UInt32(faults.latencyMilliseconds) * 1000) }
        let response = WireFrame()
        if faults.refuseAll {
            Self.finish(&entry, .refusing, "refusing all requests (--refuse-all)")
            return response.u8(KMSProtocol.Status.refusing.rawValue).string("refusing all requests (--refuse-all)")
        }
        if faults.failFraction > 0, Double.random(in: 0..<1) < faults.failFraction {
            let message = "injected failure (--fail-fraction \(faults.failFraction))"
            Self.finish(&entry, .unavailable, message)
            return response.u8(KMSProtocol.Status.unavailable.rawValue).string(message)
        }
        do {
            guard try request.readU8() == KMSProtocol.version, let op = KMSProtocol.Op(rawValue: try request.readU8()) else {
                Self.finish(&entry, .badRequest, "unknown protocol version or operation")
                return response.u8(KMSProtocol.Status.badRequest.rawValue).string("unknown protocol version or operation")
            }
            entry.kmsOp = Self.name(op)
            try perform(op, request, into: response, &entry)
        } catch let error as KeyProviderError {
            Self.finish(&entry, Self.status(error), error.description)
            return WireFrame().u8(Self.status(error).rawValue).string(error.description)
        } catch {
            Self.finish(&entry, .badRequest, "malformed request")
            return WireFrame().u8(KMSProtocol.Status.badRequest.rawValue).string("malformed request")
        }
        Self.finish(&entry, .ok, nil)
        return response
    }

    private func perform(_ op: KMSProtocol.Op, _ r: WireFrame, into out: WireFrame, _ entry: inout KMSAuditEntry) throws {
        /// Notes the key a request names before acting on it, so a refusal is recorded with it.
        func named(_ key: KeyRef) -> KeyRef {
            entry.keyID = key.keyID
            entry.keyVersion = key.version
            return key
        }
        func bound(_ context: WrapContext) {
            entry.volumeID = Self.hex(context.volumeID)
            entry.fileID = Self.hex(context.fileID)
            guard let request = context.request else { return }
            entry.requestID = request.id
            entry.operation = request.operation
            entry.uid = request.uid
            entry.pid = request.pid
            entry.process = request.process
            entry.host = request.host
            entry.reason = request.reason
        }
        switch op {
        case .ping:
            out.u8(KMSProtocol.Status.ok.rawValue)
        case .createKey:
            let key = named(try kms.createKey())
            out.u8(KMSProtocol.Status.ok.rawValue).string(key.keyID).u32(key.version)
        case .createVersion:
            let keyID = try r.readString()
            entry.keyID = keyID
            let key = named(try kms.createVersion(of: keyID))
            out.u8(KMSProtocol.Status.ok.rawValue).string(key.keyID).u32(key.version)
        case .wrap:
            let key = named(KeyRef(keyID: try r.readString(), version: try r.readU32()))
            var context = try Self.readContext(r)
            let dek = try r.readSecret()
            context.request = try RequestContextWire.read(r)
            bound(context)
            // The answer carries the EDEK (28 bytes longer) in one u16-length field.
            guard dek.count <= 0xFFFF - 28 else { throw WireFrame.Malformed() }
            let edek = try kms.wrap(dek, with: key, context: context)
            out.u8(KMSProtocol.Status.ok.rawValue).bytes(edek)
        case .unwrap:
            let key = named(KeyRef(keyID: try r.readString(), version: try r.readU32()))
            var context = try Self.readContext(r)
            let edek = try r.readArray()
            context.request = try RequestContextWire.read(r)
            bound(context)
            let dek = try kms.unwrap(edek, with: key, context: context)
            out.u8(KMSProtocol.Status.ok.rawValue)
            _ = dek.withUnsafeBytes { out.bytes($0) }
        case .state:
            let key = named(KeyRef(keyID: try r.readString(), version: try r.readU32()))
            out.u8(KMSProtocol.Status.ok.rawValue).u8(KMSProtocol.stateByte(try kms.state(of: key)))
        case .setState:
            let key = named(KeyRef(keyID: try r.readString(), version: try r.readU32()))
            guard let state = KMSProtocol.state(try r.readU8()) else { throw WireFrame.Malformed() }
            try kms.setState(state, of: key)
            out.u8(KMSProtocol.Status.ok.rawValue)
        case .anchorGet:
            let volume = try Self.readVolumeID(r)
            entry.volumeID = Self.hex(volume)
            if let anchor = try kms.auditAnchor(volumeID: volume) {
                out.u8(KMSProtocol.Status.ok.rawValue).u8(1)
                _ = anchor.withUnsafeBytes { out.bytes($0) }
            } else {
                out.u8(KMSProtocol.Status.ok.rawValue).u8(0)
            }
        case .anchorSet:
            let volume = try Self.readVolumeID(r)
            entry.volumeID = Self.hex(volume)
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

    /// A new audit entry for a request from `peer`, with an id of the server's own until the
    /// request's context names one.
    static func entry(_ peer: SocketCredentials?) -> KMSAuditEntry {
        KMSAuditEntry(time: KMSAuditEntry.now(), requestID: "srv-" + KeyRequest.newID(), peerUID: peer?.uid, peerPID: peer?.pid,
                      result: "error", status: "bad_request")
    }

    static func finish(_ entry: inout KMSAuditEntry, _ status: KMSProtocol.Status, _ error: String?) {
        entry.status = Self.statusName(status)
        entry.error = error
        switch status {
        case .ok: entry.result = "ok"
        case .keyDisabled, .keyDestroyed, .forbidden: entry.result = "denied"
        default: entry.result = "error"
        }
    }

    static func name(_ op: KMSProtocol.Op) -> String {
        switch op {
        case .ping: "ping"
        case .createKey: "create_key"
        case .createVersion: "create_version"
        case .wrap: "wrap"
        case .unwrap: "unwrap"
        case .state: "state"
        case .setState: "set_state"
        case .anchorGet: "anchor_get"
        case .anchorSet: "anchor_set"
        }
    }

    static func statusName(_ status: KMSProtocol.Status) -> String {
        switch status {
        case .ok: "ok"
        case .keyNotFound: "key_not_found"
        case .keyDisabled: "key_disabled"
        case .keyDestroyed: "key_destroyed"
        case .unwrapFailed: "unwrap_failed"
        case .unavailable: "unavailable"
        case .corrupt: "corrupt"
        case .refusing: "refusing"
        case .badRequest: "bad_request"
        case .forbidden: "forbidden"
        }
    }

    static func hex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        return String(decoding: bytes.flatMap { [digits[Int($0 >> 4)], digits[Int($0 & 0x0F)]] }, as: UTF8.self)
    }

    static func status(_ error: KeyProviderError) -> KMSProtocol.Status {
        switch error {
        case .keyNotFound: .keyNotFound
        case .keyDisabled, .accessDenied: .keyDisabled
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
