import Glibc
import CMKSystem
import Synchronization
import CMKCrypto

/// Who asked for a key use, what for and from where: the context cmkfs sends with every wrap
/// and unwrap so that the key's owner can keep a record of each use on their side (the
/// `cmkfs-kms` audit log, a cloud KMS's own log). docs/key-hierarchy.md, "Request context".
///
/// It is **not** part of the binding: `WrapContext.associatedData` ignores it, so an EDEK
/// unwraps whatever the request says, and EDEKs made before requests carried a context still do.
///
/// `id` is made here, by cmkfs, for each request (a retry keeps it), and cmkfs' own audit record
/// of the key use carries it in `kms_request`: the two logs join on it. A provider whose server
/// names requests itself (an HTTP KMS's request id) leaves that name in `receipt`, and the audit
/// record carries it too (`kms_server_request`).
public struct KeyRequest: Sendable {
    /// 32 lower-case hex digits (`newID`); a request of a batch is `BATCHID.N` (see `item`).
    public let id: String
    /// What cmkfs was doing: `open`, `create`, `truncate`, `xattr`, `rekey`, `mount`, `init`,
    /// `rotate`, `fsck`, `audit`, … (docs/kms-protocol.md lists them).
    public var operation: String
    /// The process that caused the key use: for the mount, the FUSE request's caller; for a
    /// command, the command itself. nil when no process asked (a background renewal).
    public var uid: UInt32?
    public var pid: Int32?
    /// `/proc/PID/comm` of that process.
    public var process: String?
    /// `gethostname()` of the machine cmkfs runs on.
    public var host: String
    /// The operator's justification (`cmkfs mount --kms-reason TEXT`), if any.
    public var reason: String?
    /// Where the provider leaves the request id its server gave, if it gives one.
    public let receipt: KeyRequestReceipt

    public init(operation: String, uid: UInt32? = nil, pid: Int32? = nil, process: String? = nil,
                host: String = KeyRequest.hostName, reason: String? = nil, id: String = KeyRequest.newID()) {
        self.id = id
        self.operation = operation
        self.uid = uid
        self.pid = pid
        self.process = process
        self.host = host
        self.reason = reason
        self.receipt = KeyRequestReceipt()
    }

    /// A request made by this very process (a command, or the mount for itself).
    public static func ownProcess(_ operation: String, reason: String? = nil) -> KeyRequest {
        KeyRequest(operation: operation, uid: getuid(), pid: getpid(), process: processName(getpid()), reason: reason)
    }

    /// The `n`th request of a batch made under this one (a rotation's re-wraps): the same
    /// context, id `ID.n`, so one audit record of the batch joins all of them by prefix.
    public func item(_ n: Int) -> KeyRequest {
        KeyRequest(operation: operation, uid: uid, pid: pid, process: process, host: host, reason: reason, id: "\(id).\(n)")
    }

    /// A new request id: 32 lower-case hex digits, the first 16 drawn at random once per
    /// process (`idPrefix`), the last 16 a counter. The counter makes ids unique within the
    /// process; the random prefix makes two processes' (or two hosts') ids collide only with the
    /// odds of a 64-bit random match. An id only joins two logs, it is never a secret or an
    /// authorization, so it need not be unpredictable request by request: drawing 16 random bytes
    /// per key-miss open (one `RAND_bytes`, under OpenSSL's lock) cost 3 % of the mount's CPU on
    /// a key-miss open (issue 20) for nothing a log join uses.
    public static func newID() -> String {
        hex(idPrefix, idCounter.wrappingAdd(1, ordering: .relaxed).newValue)
    }

    /// The random half of this process's request ids, drawn once. Falls back to the time and
    /// pid if the system's randomness fails: still distinct between processes.
    static let idPrefix: UInt64 = {
        if let bytes = try? SecureRandom.bytes(8) { return bytes.reduce(0) { $0 << 8 | UInt64($1) } }
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return UInt64(truncatingIfNeeded: ts.tv_sec) << 32 ^ UInt64(truncatingIfNeeded: ts.tv_nsec) << 16 ^ UInt64(UInt32(bitPattern: getpid()))
    }()

    /// Request ids made by this process so far.
    private static let idCounter = Atomic<UInt64>(0)

    /// This machine's name, read once.
    public static let hostName: String = {
        var buffer = [CChar](repeating: 0, count: 256)
        guard gethostname(&buffer, buffer.count - 1) == 0 else { return "unknown" }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }()

    /// `/proc/PID/comm` without its newline, or nil.
    public static func processName(_ pid: Int32) -> String? {
        guard let file = try? FileDescriptor.open("/proc/\(pid)/comm", O_RDONLY | O_CLOEXEC),
              let bytes = try? file.descriptor.read(upTo: 64), !bytes.isEmpty else { return nil }
        return String(decoding: bytes.prefix { $0 != 0x0A }, as: UTF8.self)
    }

    /// `a` then `b`, 16 lower-case hex digits each.
    static func hex(_ a: UInt64, _ b: UInt64) -> String {
        String(unsafeUninitializedCapacity: 32) { out in
            for i in 0..<16 {
                out[i] = hexDigit(a >> UInt64(60 - 4 * i))
                out[16 + i] = hexDigit(b >> UInt64(60 - 4 * i))
            }
            return 32
        }
    }

    @inline(__always)
    private static func hexDigit(_ v: UInt64) -> UInt8 {
        let d = UInt8(truncatingIfNeeded: v & 0xF)
        return d < 10 ? 0x30 + d : 0x57 + d
    }
}

/// The server's own name for a request, left by the provider that made it (set at most once per
/// attempt; a retry's answer replaces the failed attempt's).
public final class KeyRequestReceipt: Sendable {
    private let server = Mutex<String?>(nil)

    public init() {}

    /// The request id the server gave, or nil if it gave none (or the provider has no server).
    public var serverRequestID: String? { server.withLock { $0 } }

    public func record(serverRequestID: String) { server.withLock { $0 = serverRequestID } }
}
