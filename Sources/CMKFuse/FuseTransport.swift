import Synchronization

/// The channel the kernel's FUSE requests come through (docs/design-notes.md, "The FUSE transport").
public enum FuseTransport: String, Sendable, CaseIterable {
    /// read(2) and writev(2) on /dev/fuse, by libfuse's worker threads.
    case devFuse = "dev-fuse"
    /// FUSE over io_uring (Linux 6.14+): one ring per serving thread, four threads for every
    /// CPU queue. /dev/fuse still carries INIT, FORGET and INTERRUPT.
    case ioURing = "io_uring"
    /// io_uring when the kernel offers it (`/sys/module/fuse/parameters/enable_uring` is Y), else /dev/fuse.
    case auto

    /// Where the kernel says whether it offers FUSE over io_uring.
    public static let kernelSwitch = "/sys/module/fuse/parameters/enable_uring"

    /// Whether this kernel offers FUSE over io_uring to new mounts, and if not, why.
    public static func kernelOffersIOURing() -> (Bool, String) {
        guard let text = try? String(contentsOfFile: kernelSwitch, encoding: .utf8) else {
            return (false, "this kernel has no FUSE over io_uring (\(kernelSwitch) is missing: needs Linux 6.14+ with CONFIG_FUSE_IO_URING)")
        }
        if text.hasPrefix("Y") || text.hasPrefix("1") { return (true, "") }
        return (false, "the kernel's FUSE over io_uring is switched off (\(kernelSwitch) is N)")
    }
}

/// What the mount's transport is doing, for `cmkfs status` and metrics.
public final class TransportStatus: Sendable {
    public let requested: FuseTransport
    /// Requests served through the ring and through /dev/fuse (relaxed counters).
    let ringRequests = Atomic<UInt64>(0)
    let deviceRequests = Atomic<UInt64>(0)
    /// Threads with a registered ring entry.
    let ringThreads = Atomic<Int>(0)
    /// Why io_uring is not in use, when it was asked for (nil: in use, or not asked for).
    let fallback = Mutex<String?>(nil)
    /// The running ring, from the kernel's INIT until the mount stops.
    let ring = Mutex<RingTransport?>(nil)

    init(requested: FuseTransport) { self.requested = requested }

    /// The transport serving now: io_uring once a request came through a ring.
    public var active: FuseTransport {
        ringRequests.load(ordering: .relaxed) > 0 || ringThreads.load(ordering: .relaxed) > 0 ? .ioURing : .devFuse
    }

    public struct Snapshot: Sendable {
        public let requested: FuseTransport
        public let active: FuseTransport
        public let ringRequests: UInt64
        public let deviceRequests: UInt64
        public let ringThreads: Int
        public let fallback: String?
    }

    public var snapshot: Snapshot {
        Snapshot(requested: requested, active: active, ringRequests: ringRequests.load(ordering: .relaxed),
                 deviceRequests: deviceRequests.load(ordering: .relaxed), ringThreads: ringThreads.load(ordering: .relaxed),
                 fallback: fallback.withLock { $0 })
    }
}
