import Glibc
import Synchronization
import CMKCrypto
import CMKKeys
import CMKSystem
import CMKUnixSocket

/// A `KeyProvider` that asks a `cmkfs-kms` process over its Unix socket (docs/kms-protocol.md).
///
/// Never hangs: connect and every send/receive are bounded by `timeoutMilliseconds`
/// (SO_SNDTIMEO/SO_RCVTIMEO). Connections are pooled, one per concurrent caller; a pooled
/// connection the KMS closed (it restarted) is replaced once, transparently. Refusals say which:
/// disabled and destroyed keys are their own errors; an unreachable KMS and a KMS that refuses
/// are `.unavailable` with a message naming which.
public final class SocketKMSProvider: KeyProvider {
    public var kind: String { "socket" }
    public let socketPath: String
    public let timeoutMilliseconds: Int
    /// Idle connected sockets, released from their `FileDescriptor`s (an array cannot hold a
    /// noncopyable value) and adopted again when taken; guarded by the mutex, never held across I/O.
    private let idle = Mutex<[Int32]>([])
    /// Enough for a rotation's workers (32 in flight) to keep their connections between batches.
    static let maxIdle = 48

    public init(socketPath: String, timeoutMilliseconds: Int = 5000) {
        self.socketPath = socketPath
        self.timeoutMilliseconds = timeoutMilliseconds
    }

    deinit {
        for fd in idle.withLock({ $0 }) { try? FileDescriptor(adopting: fd).close() }
    }

    public func createKey() throws(KeyProviderError) -> KeyRef {
        let r = try call(.createKey, retryable: false) { _ in }
        return try keyRef(r)
    }

    public func createVersion(of keyID: String) throws(KeyProviderError) -> KeyRef {
        let r = try call(.createVersion, retryable: false, key: KeyRef(keyID: keyID, version: 0)) { $0.string(keyID) }
        return try keyRef(r)
    }

    public func wrap(_ dek: SecretBytes, with key: KeyRef, context: WrapContext) throws(KeyProviderError) -> [UInt8] {
        let r = try call(.wrap, key: key) { f in
            f.string(key.keyID).u32(key.version).bytes(context.volumeID).bytes(context.fileID)
            _ = dek.withUnsafeBytes { f.bytes($0) }
            RequestContextWire.write(context.request, to: f)
        }
        do { return try r.readArray() } catch { throw malformed() }
    }

    public func unwrap(_ edek: [UInt8], with key: KeyRef, context: WrapContext) throws(KeyProviderError) -> SecretBytes {
        let r = try call(.unwrap, key: key) { f in
            f.string(key.keyID).u32(key.version).bytes(context.volumeID).bytes(context.fileID).bytes(edek)
            RequestContextWire.write(context.request, to: f)
        }
        do { return try r.readSecret() } catch { throw malformed() }
    }

    public func state(of key: KeyRef) throws(KeyProviderError) -> ProviderKeyState {
        let r = try call(.state, key: key) { f in f.string(key.keyID).u32(key.version) }
        guard let b = try? r.readU8(), let s = KMSProtocol.state(b) else { throw malformed() }
        return s
    }

    public func setState(_ state: ProviderKeyState, of key: KeyRef) throws(KeyProviderError) {
        _ = try call(.setState, key: key) { f in f.string(key.keyID).u32(key.version).u8(KMSProtocol.stateByte(state)) }
    }

    public func anchorPlace(volumeID: [UInt8]) -> String? { "cmkfs-kms at \(socketPath)" }

    public func auditAnchor(volumeID: [UInt8]) throws(KeyProviderError) -> [UInt8]? {
        let r = try call(.anchorGet) { f in _ = volumeID.withUnsafeBytes { f.bytes($0) } }
        do {
            guard try r.readU8() == 1 else { return nil }
            return try r.readArray()
        } catch { throw malformed() }
    }

    public func setAuditAnchor(_ anchor: [UInt8], seq: UInt64, volumeID: [UInt8]) throws(KeyProviderError) {
        _ = try call(.anchorSet) { f in
            _ = volumeID.withUnsafeBytes { f.bytes($0) }
            f.u32(Int(seq >> 32)).u32(Int(seq & 0xFFFF_FFFF))
            _ = anchor.withUnsafeBytes { f.bytes($0) }
        }
    }

    /// Asks the KMS to answer a ping (for `status` and tests).
    public func ping() throws(KeyProviderError) { _ = try call(.ping) { _ in } }

    // MARK: private

    private func keyRef(_ r: WireFrame) throws(KeyProviderError) -> KeyRef {
        do { return KeyRef(keyID: try r.readString(), version: try r.readU32()) } catch { throw malformed() }
    }

    private func malformed() -> KeyProviderError { .unavailable("the KMS at \(socketPath) sent a malformed answer") }

    /// One request/response. Returns the response positioned after an OK status; throws the
    /// refusal otherwise.
    private func call(_ op: KMSProtocol.Op, retryable: Bool = true, key: KeyRef? = nil,
                      _ fill: (WireFrame) -> Void) throws(KeyProviderError) -> WireFrame {
        let request = WireFrame()
        request.u8(KMSProtocol.version).u8(op.rawValue)
        fill(request)
        var attempt = 0
        while true {
            attempt += 1
            var reused = false
            let connection = try connection(fresh: !retryable, reused: &reused)
            let fd = connection.descriptor
            do {
                try request.send(to: fd)
                let response = try WireFrame.receive(from: fd)
                giveBack(connection)
                return try check(response, key: key)
            } catch let failure as WireFrame.IOFailure {
                // (The connection is closed as it goes out of scope.)
                // A pooled connection the KMS has since closed: try once more on a fresh one.
                // Not for requests that create keys (the first may have been carried out).
                if case .closed = failure, reused, attempt == 1 { continue }
                throw describe(failure)
            } catch let error as KeyProviderError {
                throw error
            } catch {
                throw .unavailable("the KMS at \(socketPath): \(error)")
            }
        }
    }

    private func check(_ response: WireFrame, key: KeyRef?) throws(KeyProviderError) -> WireFrame {
        guard let raw = try? response.readU8(), let status = KMSProtocol.Status(rawValue: raw) else { throw malformed() }
        if status == .ok { return response }
        let message = (try? response.readString()) ?? ""
        let key = key ?? KeyRef(keyID: "?", version: 0)
        switch status {
        case .ok: return response
        case .keyNotFound: throw .keyNotFound(key, detail: "the KMS at \(socketPath) says: \(message)")
        case .keyDisabled: throw .keyDisabled(key)
        case .keyDestroyed: throw .keyDestroyed(key)
        case .unwrapFailed: throw .unwrapFailed(key)
        case .corrupt: throw .corrupt("the KMS at \(socketPath): \(message)")
        case .refusing: throw .unavailable("the KMS at \(socketPath) is refusing requests: \(message)")
        case .forbidden: throw .unavailable("the KMS at \(socketPath) does not serve this user: \(message)")
        case .unavailable, .badRequest: throw .unavailable("the KMS at \(socketPath) failed: \(message)")
        }
    }

    private func describe(_ failure: WireFrame.IOFailure) -> KeyProviderError {
        switch failure {
        case .timedOut: return .unavailable("the KMS at \(socketPath) did not answer within \(timeoutMilliseconds) ms")
        case .closed: return .unavailable("the KMS at \(socketPath) closed the connection (stopped or killed?)")
        case .tooLarge(let n): return .unavailable("the KMS at \(socketPath) sent an oversized frame (\(n) bytes)")
        case .errno(let e): return .unavailable("the KMS at \(socketPath): \(String(cString: strerror(e)))")
        }
    }

    /// A pooled connection (`reused` set) or a new one; `fresh` skips the pool.
    private func connection(fresh: Bool, reused: inout Bool) throws(KeyProviderError) -> FileDescriptor {
        if !fresh, let fd = idle.withLock({ $0.popLast() }) {
            reused = true
            return FileDescriptor(adopting: fd)
        }
        do {
            return try UnixSocket.connect(socketPath, timeoutMilliseconds: timeoutMilliseconds)
        } catch {
            throw .unavailable("the KMS at \(socketPath) is unreachable (\(error))")
        }
    }

    /// Keeps the connection for the next call, or closes it when the pool is full.
    private func giveBack(_ connection: consuming FileDescriptor) {
        let fd = connection.release()
        let kept = idle.withLock { fds -> Bool in
            guard fds.count < Self.maxIdle else { return false }
            fds.append(fd)
            return true
        }
        if !kept { try? FileDescriptor(adopting: fd).close() }
    }
}
