import CURing
import Glibc

/// One thread's io_uring for FUSE over io_uring (docs/design-notes.md, "The FUSE transport"):
/// a single ring entry registered with the kernel's FUSE connection, whose header and payload
/// buffers the kernel fills with a request and the daemon fills with the reply.
///
/// Not thread-safe: one thread opens it, waits on it and commits through it (io_uring's
/// submission queue has a single writer, which is what lets it go without a lock).
public final class FuseRing {
    private let ring: OpaquePointer
    /// The entry's header: `cmkfs_fuse_uring_req_header` (in/out header, op_in, ring_ent_in_out).
    public let header: UnsafeMutableRawPointer
    /// Room before the payload, so a request can be laid out contiguously in front of it
    /// (fuse_in_header and the opcode's fixed struct) for libfuse, with no copy of the payload.
    public static let prefix = 192
    private let buffer: UnsafeMutableRawPointer
    /// The entry's payload buffer, `payloadCapacity` bytes.
    public var payload: UnsafeMutableRawPointer { buffer + Self.prefix }
    public let payloadCapacity: Int
    public static let headerSize = MemoryLayout<cmkfs_fuse_uring_req_header>.size
    static let opInOffset = 128
    static let entInOutOffset = 256

    /// A ring with room for the entry's command and one poll.
    public init(payloadCapacity: Int) throws(SystemError) {
        var error: Int32 = 0
        guard let ring = cmkfs_ring_open(4, &error) else { throw SystemError("io_uring_setup", errno: Errno(rawValue: error)) }
        self.ring = ring
        self.payloadCapacity = payloadCapacity
        // The kernel pins the header; page alignment keeps it to one page.
        var memory: UnsafeMutableRawPointer?
        guard posix_memalign(&memory, 4096, 4096) == 0, let memory else {
            cmkfs_ring_close(ring)
            throw SystemError("posix_memalign", errno: .init(rawValue: ENOMEM))
        }
        header = memory
        header.initializeMemory(as: UInt8.self, repeating: 0, count: 4096)
        guard let payloadMemory = malloc(Self.prefix + payloadCapacity) else {
            free(header)
            cmkfs_ring_close(ring)
            throw SystemError("malloc", errno: .init(rawValue: ENOMEM))
        }
        buffer = payloadMemory
    }

    deinit {
        cmkfs_ring_close(ring)
        free(header)
        free(buffer)
    }

    /// The entry's last command, made again when the kernel answers it with EINTR or EAGAIN.
    private enum EntryCommand { case register(Int32, UInt16, UInt64), commit(Int32, UInt16, UInt64, UInt64) }
    private var lastCommand: EntryCommand?

    /// Queues the entry's registration on FUSE queue `queue` of connection `fuseDescriptor`.
    public func prepareRegister(fuseDescriptor: Int32, queue: UInt16, userData: UInt64) {
        let rc = cmkfs_ring_prep_fuse_register(ring, fuseDescriptor, queue, header, Self.headerSize, payload, payloadCapacity, userData)
        precondition(rc == 0, "a fresh FUSE ring has room for its entry's registration")
        lastCommand = .register(fuseDescriptor, queue, userData)
    }

    /// Queues the commit of the reply now in the entry's buffers, with the fetch of the next request.
    public func prepareCommit(fuseDescriptor: Int32, queue: UInt16, commitID: UInt64, userData: UInt64) {
        let rc = cmkfs_ring_prep_fuse_commit(ring, fuseDescriptor, queue, commitID, userData)
        precondition(rc == 0, "the entry's one command slot is free once its request completed")
        lastCommand = .commit(fuseDescriptor, queue, commitID, userData)
    }

    /// Queues a one-shot wait for `descriptor` to become readable.
    public func preparePollIn(_ descriptor: Int32, userData: UInt64) {
        let rc = cmkfs_ring_prep_poll_in(ring, descriptor, userData)
        precondition(rc == 0, "a FUSE ring keeps a slot for its stop poll")
    }

    /// Submits what is queued and waits for a completion, under the one EINTR rule.
    public func submitAndWait() throws(SystemError) {
        while true {
            let rc = cmkfs_ring_submit_and_wait(ring)
            if rc >= 0 { return }
            if rc == -EINTR { continue }
            throw SystemError("io_uring_enter", errno: Errno(rawValue: -rc))
        }
    }

    /// The next completion (its user data and result: 0, or a negative errno), if any. Under
    /// the one EINTR rule, an entry command the kernel did not take (EINTR, EAGAIN) is queued
    /// again here and never returned.
    public func nextCompletion() -> (userData: UInt64, result: Int32)? {
        var data: UInt64 = 0
        var result: Int32 = 0
        while cmkfs_ring_next_completion(ring, &data, &result) == 1 {
            if result == -EINTR || result == -EAGAIN, let last = lastCommand {
                switch last {
                case .register(let fd, let queue, let tag) where tag == data:
                    prepareRegister(fuseDescriptor: fd, queue: queue, userData: tag)
                    continue
                case .commit(let fd, let queue, let id, let tag) where tag == data:
                    prepareCommit(fuseDescriptor: fd, queue: queue, commitID: id, userData: tag)
                    continue
                default: break
                }
            }
            return (data, result)
        }
        return nil
    }

    /// The request's commit id and payload length the kernel wrote into the header.
    public var commitID: UInt64 { header.load(fromByteOffset: Self.entInOutOffset + 8, as: UInt64.self) }
    public var payloadLength: Int { Int(header.load(fromByteOffset: Self.entInOutOffset + 16, as: UInt32.self)) }

    /// Lays the request out as /dev/fuse delivers it: fuse_in_header, then the opcode's fixed
    /// struct, then the payload, which is already in place. Its start and length, or nil when
    /// the header's lengths do not add up (a kernel this code does not know).
    public func contiguousRequest() -> (start: UnsafeMutableRawPointer, length: Int)? {
        let inHeaderSize = 40
        let total = Int(header.load(as: UInt32.self))
        let opSize = total - inHeaderSize - payloadLength
        guard opSize >= 0, opSize <= 128, payloadLength <= payloadCapacity else { return nil }
        let start = payload - opSize - inHeaderSize
        start.copyMemory(from: header, byteCount: inHeaderSize)
        (start + inHeaderSize).copyMemory(from: header + Self.opInOffset, byteCount: opSize)
        return (start, total)
    }

    /// Writes a reply, as libfuse hands it to writev, into the entry: `iov` starts with the
    /// 16-byte fuse_out_header, and the rest of it is the payload. False when the header is
    /// short or the payload does not fit the payload buffer.
    public func storeReply(_ iov: UnsafeBufferPointer<iovec>) -> Bool {
        guard let first = iov.first, first.iov_len >= 16, let out = first.iov_base else { return false }
        let total = iov.reduce(0) { $0 + $1.iov_len } - 16
        guard total <= payloadCapacity else { return false }
        header.copyMemory(from: out, byteCount: 16)
        var at = payload
        // memmove: a reply may point into the request it answers, which shares this buffer.
        for (index, part) in iov.enumerated() {
            let skip = index == 0 ? 16 : 0
            guard part.iov_len > skip, let base = part.iov_base else { continue }
            memmove(at, base + skip, part.iov_len - skip)
            at += part.iov_len - skip
        }
        header.storeBytes(of: UInt32(16 + total), toByteOffset: 0, as: UInt32.self)
        header.storeBytes(of: UInt32(total), toByteOffset: Self.entInOutOffset + 16, as: UInt32.self)
        return true
    }

    /// Writes an error reply (no payload) for request `unique`.
    public func storeError(_ errno: Int32, unique: UInt64) {
        header.storeBytes(of: UInt32(16), toByteOffset: 0, as: UInt32.self)
        header.storeBytes(of: -errno, toByteOffset: 4, as: Int32.self)
        header.storeBytes(of: unique, toByteOffset: 8, as: UInt64.self)
        header.storeBytes(of: UInt32(0), toByteOffset: Self.entInOutOffset + 16, as: UInt32.self)
    }
}

/// An eventfd(2) counter: a descriptor that becomes readable once signalled, for waking
/// threads that wait in poll or io_uring.
public struct EventSignal: ~Copyable, Sendable {
    public let raw: Int32

    public init() throws(SystemError) {
        raw = try Retry.check("eventfd") { cmkfs_eventfd() }
    }

    /// Makes the descriptor readable (for every waiter: nobody reads it back).
    public func signal() {
        var one: UInt64 = 1
        _ = Retry.onInterrupt { Glibc.write(raw, &one, 8) }
    }

    deinit { Glibc.close(raw) }
}

public enum ThreadPlacement {
    /// Names the calling thread as `ps -L` and /proc/PID/task/TID/comm show it (15 bytes at most).
    public static func nameCurrentThread(_ name: String) {
        _ = cmkfs_name_current_thread(String(decoding: name.utf8.prefix(15), as: UTF8.self))
    }

    /// How many CPUs the kernel may ever run (the highest in `/sys/devices/system/cpu/possible`,
    /// plus one): the kernel's FUSE ring has a queue for each, and takes requests over the ring
    /// only once every queue has an entry. glibc's count of configured CPUs is the fallback.
    public static var possibleCPUs: Int {
        if let file = try? Descriptor.cwd.openat("/sys/devices/system/cpu/possible", O_RDONLY | O_CLOEXEC),
           let bytes = try? file.descriptor.read(upTo: 256), let highest = possibleCPUHighest(String(decoding: bytes, as: UTF8.self)) {
            return highest + 1
        }
        return Int(cmkfs_possible_cpus())
    }

    /// The highest CPU number in a kernel CPU list such as "0-3,6" (nil if it does not parse).
    static func possibleCPUHighest(_ list: String) -> Int? {
        let numbers = list.split(whereSeparator: { $0 == "," || $0 == "-" || $0 == "\n" || $0 == " " }).map { Int($0) }
        guard !numbers.isEmpty, !numbers.contains(nil) else { return nil }
        return numbers.compactMap { $0 }.max()
    }
}
