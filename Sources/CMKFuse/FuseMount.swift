import Logging
import Glibc
import Foundation
import Synchronization
import CFuse3
import CMKSystem
import CMKVolume

/// Runs a `FileSystem` as a FUSE mount in this process (multithreaded low-level libfuse loop).
public enum FuseMount {
    /// Mounts at `mountpoint`, serves requests until the mount is unmounted (or
    /// SIGINT/SIGTERM/SIGHUP), then tears down.
    /// `ready` runs (on another thread) once the mount answers: a `stat` of the mountpoint,
    /// served by this process's own request loop, shows the mount's root rather than the
    /// directory beneath it. A kernel mount alone is not enough: until the loop runs, every
    /// access to it would hang. `stopping` runs when the loop has ended, before the unmount.
    /// `kernelOptions`: generic mount options (`MountOptions.kernelOptions`: ro, noexec, …) that
    /// libfuse turns into mount flags; nosuid and nodev are libfuse's default and always on.
    public static func run(_ fileSystem: FileSystem, at mountpoint: String, kernelOptions: [String] = [],
                           ready: @escaping @Sendable () -> Void, stopping: () -> Void = {}) throws(CMKError) {
        raiseDescriptorLimit()
        var options = ["fsname=cmkfs:" + escapeOption(fileSystem.volume.path), "subtype=cmkfs", "default_permissions"]
        options += kernelOptions.filter { MountOptions.kernelOptions.contains($0) }
        // As root the mount serves every user (permissions still enforced by the kernel through
        // default_permissions); an unprivileged mount would need user_allow_other in /etc/fuse.conf.
        if geteuid() == 0 { options.append("allow_other") }
        let words: [String] = ["cmkfs", "-o", options.joined(separator: ",")]
        let argv: [UnsafeMutablePointer<CChar>?] = words.map { strdup($0) }
        defer { argv.forEach { free($0) } }
        var cArgv: [UnsafeMutablePointer<CChar>?] = argv + [nil]
        let context = Unmanaged.passRetained(fileSystem)
        defer { context.release() }
        try cArgv.withUnsafeMutableBufferPointer { buffer throws(CMKError) in
            var args = fuse_args(argc: Int32(argv.count), argv: buffer.baseAddress, allocated: 0)
            defer { fuse_opt_free_args(&args) }
            var ops = LowLevelCallbacks.operations()
            guard let session = fuse_session_new(&args, &ops, MemoryLayout<fuse_lowlevel_ops>.size, context.toOpaque()) else {
                throw CMKError(.mountFailed, "libfuse rejected the mount options")
            }
            defer { fuse_session_destroy(session) }
            guard fuse_set_signal_handlers(session) == 0 else {
                throw CMKError(.mountFailed, "cannot install signal handlers")
            }
            defer { fuse_remove_signal_handlers(session) }
            let ring = try prepareRing(fileSystem, session)
            let beneath = try? Descriptor.cwd.stat(mountpoint)
            guard fuse_session_mount(session, mountpoint) == 0 else {
                throw CMKError(.mountFailed, "the kernel refused to mount \(mountpoint) (see the lines above from libfuse)",
                               hint: "check that /dev/fuse exists and fuse3 is installed, and that you are root")
            }
            defer { fuse_session_unmount(session) }
            if !KernelChannel.install(session) {
                FileSystem.logger.warning("cannot hook the FUSE channel: the kernel will ask for security.capability before each write")
            }
            // Before the unmount (defers run last first): each ring thread finishes its request.
            defer {
                ring?.stop()
                fileSystem.transport.ring.withLock { $0 = nil }
            }
            fileSystem.session.withLock { $0 = SessionPointer(raw: session) }
            defer { fileSystem.session.withLock { $0 = nil } }
            fileSystem.cache.startMaintenance()
            try ControlServer.start(fileSystem)
            defer { try? Descriptor.cwd.unlink(fileSystem.volume.path + "/control.sock") }
            let serving = ServingFlag()
            startReadinessProbe(mountpoint, beneath: beneath?.st_dev, serving: serving, ready: ready)
            // Unlinked files still held open are closed (their blocks freed) before the mount ends.
            defer { fileSystem.evictions.drain() }
            defer { fileSystem.forgets.flush() }
            // The unnamed files made ahead of creates go with their descriptors.
            defer { fileSystem.unnamedFiles?.drain() }
            StallPoint.hit("fuse-loop-start")
            let rc = cmkfs_session_loop_mt(session, 10)
            // libfuse's workers are joined; end the ring threads too before anything is torn
            // down (the pending key-row deletes are flushed after this, for instance). The
            // defer above covers the paths that throw.
            ring?.stop()
            serving.end()
            stopping()
            if rc != 0 && rc != -EINTR {
                FileSystem.logger.error("the FUSE loop ended with error \(rc)")
            }
        }
    }

    /// Ring threads per CPU queue: one request that waits (a KMS call, an fsync) holds one
    /// thread, and the kernel hands the CPU's next request to another.
    static let ringThreadsPerQueue = 4

    /// The FUSE-over-io_uring transport when the mount asks for it and the kernel offers it; it
    /// starts serving once the kernel's INIT is answered (`KernelChannel`). An explicit
    /// `io_uring` on a kernel without it is refused before anything is mounted.
    private static func prepareRing(_ fileSystem: FileSystem, _ session: OpaquePointer) throws(CMKError) -> RingTransport? {
        let status = fileSystem.transport
        guard status.requested != .devFuse else { return nil }
        let (offered, why) = FuseTransport.kernelOffersIOURing()
        guard offered else {
            if status.requested == .ioURing {
                throw CMKError(.mountFailed, "cannot serve over io_uring: \(why)",
                               hint: "as root: echo Y > \(FuseTransport.kernelSwitch); or mount with --fuse-transport auto or dev-fuse")
            }
            status.fallback.withLock { $0 = why }
            FileSystem.logger.info("FUSE transport: /dev/fuse (\(why))")
            return nil
        }
        do throws(SystemError) {
            let ring = try RingTransport(session: SessionPointer(raw: session), threadsPerQueue: ringThreadsPerQueue, status: status)
            status.ring.withLock { $0 = ring }
            return ring
        } catch {
            throw CMKError(.mountFailed, "cannot prepare the FUSE ring: \(error)")
        }
    }

    /// Waits on a thread of its own for the mount to answer, then calls `ready`, unless the loop
    /// has already ended (then the `stat` may have reached the directory beneath).
    private static func startReadinessProbe(_ mountpoint: String, beneath: dev_t?, serving: ServingFlag,
                                            ready: @escaping @Sendable () -> Void) {
        let thread = Thread {
            let st: stat
            do throws(SystemError) { st = try Descriptor.cwd.stat(mountpoint) } catch {
                FileSystem.logger.error("the mount at \(mountpoint) does not answer: \(error.errno)")
                return
            }
            guard beneath.map({ st.st_dev != $0 }) ?? true else {
                FileSystem.logger.error("the mount at \(mountpoint) does not answer: it still shows the directory beneath")
                return
            }
            guard serving.isServing else { return }
            ready()
        }
        thread.name = "cmkfs-readiness"
        thread.start()
    }

    /// Every inode the kernel holds costs the daemon one `O_PATH` descriptor, so a limit of a
    /// few thousand would fail a large tree with EMFILE. Raise it to the system maximum
    /// (`fs.nr_open`, usually 1,048,576; root may raise the hard limit), else to the hard limit.
    static func raiseDescriptorLimit() {
        guard let limit = try? ResourceLimits.openFiles() else { return }
        let systemMax = (try? String(contentsOfFile: "/proc/sys/fs/nr_open", encoding: .utf8))
            .flatMap { rlim_t($0.trimmingCharacters(in: .whitespacesAndNewlines)) } ?? limit.maximum
        let wanted = max(systemMax, limit.maximum)
        if (try? ResourceLimits.setOpenFiles(current: wanted, maximum: wanted)) == nil {
            try? ResourceLimits.setOpenFiles(current: limit.maximum, maximum: limit.maximum)
        }
    }

    /// libfuse splits `-o` values on commas and treats backslash as an escape.
    static func escapeOption(_ value: String) -> String {
        value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: ",", with: "\\,")
    }
}

/// Whether the request loop still runs, shared with the readiness probe's thread.
final class ServingFlag: Sendable {
    private let serving = Mutex(true)
    var isServing: Bool { serving.withLock { $0 } }
    func end() { serving.withLock { $0 = false } }
}
