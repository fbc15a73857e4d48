import Glibc
import CMKCrypto
import CMKSystem

/// One protocol message being built or read (docs/kms-protocol.md). Frames carry DEKs, so the
/// storage is a raw buffer wiped when the frame is released, never an `[UInt8]`.
///
/// Not thread-safe: a frame belongs to the one connection handler or client call using it.
final class WireFrame {
    /// Largest body accepted: far above any real message, small enough to refuse garbage early.
    static let maxBody = 64 * 1024
    private(set) var storage: UnsafeMutableRawBufferPointer
    /// Bytes written so far (the 4-byte length prefix included).
    private(set) var count = 4
    /// Read position inside the body (after the length prefix).
    private var cursor = 4

    init(capacity: Int = 512) {
        storage = UnsafeMutableRawBufferPointer.allocate(byteCount: max(capacity, 8), alignment: 16)
        storage.initializeMemory(as: UInt8.self, repeating: 0)
    }

    deinit {
        secureZero(storage)
        storage.deallocate()
    }

    var bodyCount: Int { count - 4 }

    // MARK: writing

    private func reserve(_ n: Int) {
        guard count + n > storage.count else { return }
        let bigger = UnsafeMutableRawBufferPointer.allocate(byteCount: max(storage.count * 2, count + n), alignment: 16)
        bigger.initializeMemory(as: UInt8.self, repeating: 0)
        UnsafeMutableRawBufferPointer(rebasing: bigger[0..<count]).copyMemory(from: UnsafeRawBufferPointer(rebasing: storage[0..<count]))
        secureZero(storage)
        storage.deallocate()
        storage = bigger
    }

    @discardableResult func u8(_ v: UInt8) -> WireFrame {
        reserve(1); storage[count] = v; count += 1
        return self
    }

    @discardableResult func u16(_ v: Int) -> WireFrame {
        u8(UInt8((v >> 8) & 0xFF)); return u8(UInt8(v & 0xFF))
    }

    @discardableResult func u32(_ v: Int) -> WireFrame {
        u16((v >> 16) & 0xFFFF); return u16(v & 0xFFFF)
    }

    /// A u16 length then the bytes.
    @discardableResult func bytes(_ b: UnsafeRawBufferPointer) -> WireFrame {
        precondition(b.count <= 0xFFFF, "field too long for the wire format")
        u16(b.count)
        reserve(b.count)
        if b.count > 0 { UnsafeMutableRawBufferPointer(rebasing: storage[count..<(count + b.count)]).copyMemory(from: b) }
        count += b.count
        return self
    }

    @discardableResult func bytes(_ b: [UInt8]) -> WireFrame {
        b.withUnsafeBytes { bytes($0) }
    }

    @discardableResult func string(_ s: String) -> WireFrame { bytes(Array(s.utf8.prefix(0xFFFF))) }

    /// Writes the length prefix; the frame is then ready to send.
    func seal() {
        let n = bodyCount
        storage[0] = UInt8(n >> 24); storage[1] = UInt8((n >> 16) & 0xFF); storage[2] = UInt8((n >> 8) & 0xFF); storage[3] = UInt8(n & 0xFF)
    }

    // MARK: reading

    struct Malformed: Error {}

    func readU8() throws(Malformed) -> UInt8 {
        guard cursor + 1 <= count else { throw Malformed() }
        defer { cursor += 1 }
        return storage[cursor]
    }

    func readU16() throws(Malformed) -> Int { Int(try readU8()) << 8 | Int(try readU8()) }

    func readU32() throws(Malformed) -> Int { try readU16() << 16 | readU16() }

    /// A length-prefixed field as a view into the frame (valid while the frame lives).
    func readBytes() throws(Malformed) -> UnsafeRawBufferPointer {
        let n = try readU16()
        guard cursor + n <= count else { throw Malformed() }
        defer { cursor += n }
        return UnsafeRawBufferPointer(rebasing: storage[cursor..<(cursor + n)])
    }

    func readArray() throws(Malformed) -> [UInt8] { Array(try readBytes()) }

    func readString() throws(Malformed) -> String { String(decoding: try readBytes(), as: UTF8.self) }

    /// A secret field, copied into `SecretBytes`.
    func readSecret() throws(Malformed) -> SecretBytes {
        let b = try readBytes()
        guard b.count > 0 else { throw Malformed() }
        return SecretBytes(copying: b)
    }

    var atEnd: Bool { cursor == count }

    // MARK: socket I/O

    enum IOFailure: Error {
        /// The peer closed the connection (or reset it) before a whole frame arrived.
        case closed
        /// SO_RCVTIMEO/SO_SNDTIMEO expired.
        case timedOut
        /// The length prefix is out of range.
        case tooLarge(Int)
        case errno(Int32)
    }

    /// Sends the sealed frame (MSG_NOSIGNAL: a dead peer is an error, not a SIGPIPE).
    func send(to fd: Descriptor) throws(IOFailure) {
        seal()
        do { try fd.sendAll(UnsafeRawBufferPointer(rebasing: storage[0..<count])) } catch { throw Self.failure(error) }
    }

    /// Reads one whole frame from `fd`.
    static func receive(from fd: Descriptor) throws(IOFailure) -> WireFrame {
        let header = WireFrame(capacity: 8)
        try header.fill(fd, upTo: 4)
        let n = Int(header.storage[0]) << 24 | Int(header.storage[1]) << 16 | Int(header.storage[2]) << 8 | Int(header.storage[3])
        guard n <= maxBody else { throw .tooLarge(n) }
        let frame = WireFrame(capacity: 4 + n)
        try frame.fill(fd, upTo: 4 + n, from: 4)
        return frame
    }

    private func fill(_ fd: Descriptor, upTo end: Int, from start: Int = 0) throws(IOFailure) {
        var at = start
        while at < end {
            let n: Int
            do { n = try fd.receive(into: UnsafeMutableRawBufferPointer(rebasing: storage[at..<end])) } catch { throw Self.failure(error) }
            if n == 0 { throw .closed }
            at += n
        }
        count = end
    }

    private static func failure(_ error: SystemError) -> IOFailure {
        switch error.errno.rawValue {
        case EAGAIN, EWOULDBLOCK: return .timedOut
        case ECONNRESET, EPIPE: return .closed
        default: return .errno(error.errno.rawValue)
        }
    }
}
