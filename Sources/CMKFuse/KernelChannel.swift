import Glibc
import Synchronization
import CFuse3

/// The mount's reads and writes on `/dev/fuse`, through libfuse's custom-I/O hook, to ask the
/// kernel for `FUSE_HANDLE_KILLPRIV_V2`, which libfuse 3.14 (Debian 12) cannot ask for.
///
/// Why: without it the kernel asks the daemon for `security.capability` (a GETXATTR round trip)
/// before every write(2) and after every chown, to decide whether to clear setuid bits — half of
/// the FUSE requests of a 4 KiB random-write load and two of the nine of each file `tar x`
/// makes. With it the kernel marks the superblock SB_NOSEC, stops asking, and instead flags the
/// WRITE or SETATTR of a caller without CAP_FSETID so that the daemon clears the bits itself
/// (`FileSystem.killSetIDBits`). cmkfs stores no `security.*` xattrs (ENOTSUP), so there is no
/// capability to remove, only the mode bits. The kernel flags an OPEN with O_TRUNC the same way
/// (FUSE_OPEN_KILL_SUIDGID), and a FALLOCATE not at all (`FileSystem.fallocate` asks the caller's
/// capabilities itself).
///
/// How: the INIT request is read here; if the kernel offers the flag, the bit is added to
/// libfuse's INIT reply as it is written back. The same hook adds FUSE_OVER_IO_URING when the
/// mount serves over io_uring (`RingTransport`), and its writev takes the replies of requests
/// that came through a ring into that ring's entry instead of /dev/fuse. Every later request is only inspected for the
/// kill flag, which is handed to the handler through a thread-local (libfuse's worker threads
/// read a request and process it on the same thread).
enum KernelChannel {
    /// The INIT request's unique id while its reply is awaited (0: none).
    fileprivate static let pendingInit = Atomic<UInt64>(0)
    /// What the INIT request offered: KILLPRIV_V2, FUSE over io_uring.
    fileprivate static let initOffersKillPriv = Atomic<Bool>(false)
    fileprivate static let initOffersRing = Atomic<Bool>(false)

    /// Routes the session's I/O through this channel. Call after `fuse_session_mount`.
    ///
    /// The two hooks make the plain read(2) and writev(2), not CMKSystem's calls: they answer
    /// libfuse as those calls do (-1 and errno), and an EINTR must reach libfuse. A signal
    /// (SIGTERM, SIGINT, SIGHUP: `fuse_set_signal_handlers`) interrupts the worker blocked on
    /// /dev/fuse so its loop sees that the session has exited; CMKSystem's rule would retry the
    /// read and keep the worker waiting for the next request.
    static func install(_ session: OpaquePointer) -> Bool {
        var io = fuse_custom_io()
        io.read = { fd, buffer, length, userdata in
            let n = Glibc.read(fd, buffer, length)
            guard n > 0, let buffer else { return n }
            let initUnique = cmkfs_init_unique(buffer, n)
            if initUnique != 0 {
                KernelChannel.initOffersKillPriv.store(cmkfs_init_offering_killpriv_v2(buffer, n) != 0, ordering: .sequentiallyConsistent)
                KernelChannel.initOffersRing.store(cmkfs_init_offering_io_uring(buffer, n) != 0, ordering: .sequentiallyConsistent)
                KernelChannel.pendingInit.store(initUnique, ordering: .sequentiallyConsistent)
            }
            KillFlag.set(cmkfs_request_kills_suidgid(buffer, n) != 0)
            if let userdata { Unmanaged<FileSystem>.fromOpaque(userdata).takeUnretainedValue().transport.deviceRequests.add(1, ordering: .relaxed) }
            return n
        }
        io.writev = { fd, iov, count, userdata in
            if let iov, let worker = RingWorker.current, let written = worker.takeReply(iov, count: Int(count)) {
                return written
            }
            let unique = KernelChannel.pendingInit.load(ordering: .sequentiallyConsistent)
            guard unique != 0, cmkfs_reply_unique(iov, count) == unique else { return Glibc.writev(fd, iov, count) }
            KernelChannel.pendingInit.store(0, ordering: .sequentiallyConsistent)
            let ring = userdata.flatMap { Unmanaged<FileSystem>.fromOpaque($0).takeUnretainedValue().transport.ring.withLock { $0 } }
            let payload = KernelChannel.patchInitReply(iov, count: count, unique: unique, ring: ring)
            let written = Glibc.writev(fd, iov, count)
            // The kernel takes ring registrations only once it has processed the INIT reply,
            // which the write above did.
            if written > 0, payload > 0, let ring { ring.start(payloadCapacity: payload) }
            return written
        }
        return fuse_session_custom_io(session, &io, fuse_session_fd(session)) == 0
    }

    /// Adds what the kernel offered and libfuse cannot ask for to libfuse's INIT reply: the
    /// KILLPRIV_V2 flag, and FUSE over io_uring when a ring waits for it. Returns the ring
    /// entries' payload size (0: no ring).
    private static func patchInitReply(_ iov: UnsafeMutablePointer<iovec>?, count: Int32, unique: UInt64, ring: RingTransport?) -> Int {
        if initOffersKillPriv.load(ordering: .sequentiallyConsistent),
           cmkfs_patch_init_reply(iov, count, unique, CMKFS_FUSE_HANDLE_KILLPRIV_V2) == 1 {
            FileSystem.logger.info("FUSE_HANDLE_KILLPRIV_V2 on: cmkfs clears setuid/setgid bits on write, truncate and chown")
        }
        guard let ring else { return 0 }
        let payload = initOffersRing.load(ordering: .sequentiallyConsistent) ? cmkfs_patch_init_reply_io_uring(iov, count, unique) : 0
        if payload == 0 {
            ring.status.fallback.withLock { $0 = $0 ?? "the kernel did not offer FUSE over io_uring at INIT" }
            FileSystem.logger.warning("FUSE over io_uring: the kernel did not offer it at INIT; requests stay on /dev/fuse")
        }
        return payload
    }

    /// Whether the request this thread is serving asks the daemon to clear setuid/setgid bits.
    static var currentRequestKillsSetIDBits: Bool { KillFlag.get() }
}

/// One flag per thread, through a pthread key (Swift has no thread-local storage of its own).
enum KillFlag {
    static let key: pthread_key_t = {
        var key = pthread_key_t()
        precondition(pthread_key_create(&key, nil) == 0, "pthread_key_create failed")
        return key
    }()

    static func set(_ on: Bool) {
        _ = pthread_setspecific(key, on ? UnsafeRawPointer(bitPattern: 1) : nil)
    }

    static func get() -> Bool { pthread_getspecific(key) != nil }
}
