import CFuse3
import CMKSystem
import Foundation
import Glibc
import Synchronization

/// FUSE over io_uring beneath libfuse 3.14, which cannot drive it (docs/design-notes.md, "The
/// FUSE transport").
///
/// After the kernel's INIT (answered over /dev/fuse with FUSE_OVER_IO_URING added to libfuse's
/// reply), `threadsPerQueue` threads per possible CPU each register one ring entry for that
/// CPU's queue and serve it: the kernel writes a request into the entry's buffers, the thread
/// lays it out as /dev/fuse would deliver it and hands it to libfuse
/// (`fuse_session_process_buf`), and the reply libfuse writes through the channel's writev hook
/// lands in the entry instead, committed with the fetch of the next request in one
/// `io_uring_enter`. The filesystem above is untouched: it sees the same requests and replies.
/// One entry per thread keeps each ring single-writer (no lock) and lets a request that waits
/// (a KMS call, an fsync) hold one thread only; the kernel queues a CPU's requests while all its
/// entries are busy.
final class RingTransport: Sendable {
    let session: SessionPointer
    let threadsPerQueue: Int
    let status: TransportStatus
    private let stopSignal: EventSignal
    private let running = Mutex(0)
    private let finished = NSCondition()

    init(session: SessionPointer, threadsPerQueue: Int, status: TransportStatus) throws(SystemError) {
        self.session = session
        self.threadsPerQueue = threadsPerQueue
        self.status = status
        stopSignal = try EventSignal()
    }

    /// Starts the serving threads: `payloadCapacity` is the largest request payload the kernel
    /// will send (from the INIT reply).
    func start(payloadCapacity: Int) {
        let queues = ThreadPlacement.possibleCPUs
        for queue in 0..<queues {
            for index in 0..<threadsPerQueue {
                running.withLock { $0 += 1 }
                let worker = RingWorker(transport: self, queue: queue, payloadCapacity: payloadCapacity)
                let thread = Thread { [self] in
                    worker.run()
                    running.withLock { $0 -= 1 }
                    finished.lock(); finished.broadcast(); finished.unlock()
                }
                thread.name = "cmkfs-ring-\(queue).\(index)"
                thread.start()
            }
        }
        FileSystem.logger.info("FUSE over io_uring: \(queues) queues, \(threadsPerQueue) threads each, \(payloadCapacity / 1024) KiB per request")
    }

    /// Wakes every serving thread and waits for them to end (each finishes its request first).
    /// Idempotent.
    func stop() {
        stopSignal.signal()
        finished.lock()
        while running.withLock({ $0 }) > 0 { _ = finished.wait(until: Date().addingTimeInterval(1)) }
        finished.unlock()
    }

    fileprivate var stopDescriptor: Int32 { stopSignal.raw }
}

/// One serving thread and its ring entry. Sound as @unchecked Sendable: it is handed to its thread before
/// that thread starts, and from then on only that thread touches it (the writev hook reaches it
/// through the thread's own pthread key).
final class RingWorker: @unchecked Sendable {
    private let transport: RingTransport
    private let queue: Int
    private let payloadCapacity: Int
    private var ring: FuseRing?
    private var fuseDescriptor: Int32 = -1
    /// The unique id of the request being served (0: none), and its commit id.
    private var pending: UInt64 = 0
    private var commitID: UInt64 = 0
    private var registered = false

    private static let entryTag: UInt64 = 1
    private static let stopTag: UInt64 = 2

    init(transport: RingTransport, queue: Int, payloadCapacity: Int) {
        self.transport = transport
        self.queue = queue
        self.payloadCapacity = payloadCapacity
    }

    func run() {
        let status = transport.status
        // Named so that `ps -L`, `top -H` and /proc show which queue a thread serves (Foundation's
        // Thread.name does not reach the kernel's thread name here).
        ThreadPlacement.nameCurrentThread("cmkfs-ring-\(queue)")
        // Not pinned to the queue's CPU (libfuse's own ring threads are). Measured twice on this
        // 2-vCPU machine: pinned, a key-hit open costs the daemon less CPU (~31 against ~38 us
        // per open+read+close), but key-miss opens are slower and erratic (round 6: median
        // ~7,400 against ~8,500/s over 6 runs, the worst 1,100 and 3,900 against 7,300; before:
        // 4,000 against 5,100), since a request that waits for the disk then resumes only on
        // its queue's CPU, however busy that is (docs/benchmarks.md, "Issue 20: FUSE over
        // io_uring, round 6").
        let ring: FuseRing
        do throws(SystemError) { ring = try FuseRing(payloadCapacity: payloadCapacity) } catch {
            status.fallback.withLock { $0 = $0 ?? "cannot set up an io_uring: \(error)" }
            FileSystem.logger.error("FUSE over io_uring: cannot set up a ring: \(error); requests stay on /dev/fuse")
            return
        }
        self.ring = ring
        fuseDescriptor = fuse_session_fd(transport.session.raw)
        ring.prepareRegister(fuseDescriptor: fuseDescriptor, queue: UInt16(queue), userData: Self.entryTag)
        ring.preparePollIn(transport.stopDescriptor, userData: Self.stopTag)
        RingWorker.setCurrent(self)
        defer {
            RingWorker.setCurrent(nil)
            if registered { status.ringThreads.subtract(1, ordering: .relaxed) }
        }
        registered = true
        status.ringThreads.add(1, ordering: .relaxed)
        while true {
            do throws(SystemError) { try ring.submitAndWait() } catch {
                FileSystem.logger.error("FUSE ring for CPU \(queue) stopped: \(error)")
                return
            }
            while let completion = ring.nextCompletion() {
                if completion.userData == Self.stopTag { return }
                switch completion.result {
                case 0:
                    serve(ring)
                case -ENOTCONN, -ECONNABORTED:
                    return  // unmounted: the kernel tears the ring down
                default:
                    let error = Errno(rawValue: -completion.result)
                    if commitID == 0 {
                        status.fallback.withLock { $0 = $0 ?? "the kernel refused the ring's registration (\(error.symbol))" }
                        FileSystem.logger.error("FUSE over io_uring: the kernel refused a ring entry (\(error.symbol)); requests stay on /dev/fuse")
                    } else {
                        FileSystem.logger.error("FUSE ring for CPU \(queue) stopped: \(error.symbol)")
                    }
                    return
                }
            }
        }
    }

    /// Serves the request the kernel put into the entry, then queues its commit.
    private func serve(_ ring: FuseRing) {
        commitID = ring.commitID
        guard let request = ring.contiguousRequest() else {
            ring.storeError(EIO, unique: commitID)
            ring.prepareCommit(fuseDescriptor: fuseDescriptor, queue: UInt16(queue), commitID: commitID, userData: Self.entryTag)
            return
        }
        pending = request.start.load(fromByteOffset: 8, as: UInt64.self)
        KillFlag.set(cmkfs_request_kills_suidgid(request.start, request.length) != 0)
        var buffer = fuse_buf(size: request.length, flags: fuse_buf_flags(rawValue: 0), mem: request.start, fd: -1, pos: 0)
        fuse_session_process_buf(transport.session.raw, &buffer)
        if pending != 0 {
            // Every handler replies before it returns; a request left unanswered would hang its
            // caller and the entry, so answer EIO rather than leak it.
            FileSystem.logger.error("FUSE ring: request \(pending) got no reply; answering EIO")
            ring.storeError(EIO, unique: pending)
            commit(ring)
        }
        transport.status.ringRequests.add(1, ordering: .relaxed)
    }

    private func commit(_ ring: FuseRing) {
        pending = 0
        ring.prepareCommit(fuseDescriptor: fuseDescriptor, queue: UInt16(queue), commitID: commitID, userData: Self.entryTag)
    }

    /// Takes libfuse's reply to the request this thread serves into the ring entry; the bytes
    /// "written", or nil when the reply is not for it (it then goes to /dev/fuse).
    func takeReply(_ iov: UnsafeMutablePointer<iovec>, count: Int) -> Int? {
        guard pending != 0, count >= 1, iov[0].iov_len >= 16, let out = iov[0].iov_base,
              let ring, out.load(fromByteOffset: 8, as: UInt64.self) == pending else { return nil }
        let parts = UnsafeBufferPointer(start: iov, count: count)
        if !ring.storeReply(parts) { ring.storeError(ERANGE, unique: pending) }
        commit(ring)
        return parts.reduce(0) { $0 + $1.iov_len }
    }

    // The serving thread's worker, for the writev hook (libfuse replies on the thread that
    // processes the request).
    private static let key: pthread_key_t = {
        var key = pthread_key_t()
        precondition(pthread_key_create(&key, nil) == 0, "pthread_key_create failed")
        return key
    }()

    private static func setCurrent(_ worker: RingWorker?) {
        _ = pthread_setspecific(key, worker.map { UnsafeRawPointer(Unmanaged.passUnretained($0).toOpaque()) })
    }

    /// The worker of the calling thread, if it is a ring thread.
    static var current: RingWorker? {
        pthread_getspecific(key).map { Unmanaged<RingWorker>.fromOpaque($0).takeUnretainedValue() }
    }
}
