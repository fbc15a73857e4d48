import ArgumentParser
import Foundation
import CMKAudit
import CMKCrypto
import CMKFuse
import CMKMetrics
import CMKSystem
import CMKVolume
import Logging

struct MountCommand: ParsableCommand {
    /// The longest `--kms-reason` (bytes): a justification, not a document.
    static let maxReason = 256
    /// glibc malloc arenas of the mount daemon (`ProcessControls.limitMallocArenas`): two, for
    /// the two threads that allocate at once on a busy 2-core machine without waiting on a lock.
    static let mallocArenas: Int32 = 2

    static let configuration = CommandConfiguration(
        commandName: "mount",
        abstract: "Mount a volume; returns once the mount is ready (--foreground stays attached).",
        discussion: """
        The background mount logs to VOLUME/mount.log (or, with --log-to syslog, to syslog and the \
        journal). Unmount with: cmkfs unmount MOUNTPOINT

        -o takes what fstab and mount(8) give a helper: generic options (ro, noexec, noatime,         …), cmkfs's own by name (kms_dir=DIR, pin_file=FILE, vault_token_file=FILE, cache_idle_ttl=5m,         cache_max_lifetime=1h, lease_renew=5m, cache_capacity=N, log_level=LEVEL, log_to=DEST,         metrics_textfile=PATH, metrics_interval=SECONDS, pkcs11_uri=URI, fuse_transport=dev-fuse|io_uring|auto, writeback_cache, audit_syslog) and mount(8)'s own (defaults, _netdev, nofail, x-systemd.*), which are         left alone. An unknown option is an error, never ignored; suid and dev are refused (a         cmkfs mount is always nosuid,nodev).

        Example: cmkfs mount /srv/secure-vol /mnt/secure --log-level debug
        Example: cmkfs mount /srv/secure-vol /mnt/secure -o ro,noexec,kms_dir=/etc/cmkfs/kms
        Example: cmkfs mount /srv/secure-vol /mnt/secure --metrics-textfile /var/lib/node_exporter/textfile/cmkfs.prom
        """
    )

    @Argument(help: "The volume directory.")
    var volume: String

    @Argument(help: "An existing directory to mount the plaintext view on.")
    var mountpoint: String

    @Flag(help: "Serve in this process until unmounted, logging to stderr.")
    var foreground = false

    @Option(name: .customLong("kms-dir"), help: "Use this embedded KMS keystore instead of the one the volume records.")
    var kmsDir: String?

    @Option(name: [.customLong("pin-file"), .customLong("vault-token-file")], help: "PKCS#11 volumes: a file holding the user PIN, Vault volumes: the token (else $CMKFS_PKCS11_PIN or $VAULT_TOKEN, else the terminal).")
    var pinFile: String?

    @Option(name: .customLong("pkcs11-uri"),
            help: "PKCS#11 volumes: an RFC 7512 URI whose pin-source=file:PATH gives the PIN; its token, object and module, if named, must be the volume's.")
    var pkcs11URI: String?

    @Option(name: .customLong("kms-reason"),
            help: "A justification sent with every key request this mount makes, for the key owner's log (at most 256 bytes).")
    var kmsReason: String?

    @Option(name: .customLong("log-level"), help: "Log messages at this level and above.")
    var logLevel: Logger.Level = .info

    @Option(name: .customLong("log-to"), help: "Where the mount logs: stderr (VOLUME/mount.log in the background) or syslog.")
    var logTo: LogDestination = .stderr

    @Flag(name: .customLong("audit-syslog"),
          help: "Also send each audit record to journald (structured CMKFS_* fields) or, without journald, to syslog; the volume's log stays the authority.")
    var auditSyslog = false

    @Flag(name: .customLong("writeback-cache"),
          help: "Let the kernel buffer writes and send them in batches (faster small writes; see the man page for what a kill switch or a crash then costs).")
    var writebackCache = false

    @Option(name: .customLong("fuse-transport"),
            help: "How the kernel's requests reach the daemon: dev-fuse (read/write on /dev/fuse), io_uring (FUSE over io_uring, Linux 6.14+ with /sys/module/fuse/parameters/enable_uring=Y; refused otherwise) or auto (io_uring when the kernel offers it).")
    var fuseTransport: FuseTransport = .devFuse

    @Option(name: .customLong("metrics-textfile"),
            help: "Write the mount's metrics (as `cmkfs metrics` prints them) to this file for node_exporter's textfile collector, replaced atomically every --metrics-interval.")
    var metricsTextfile: String?

    @Option(name: .customLong("metrics-interval"), help: "Seconds between rewrites of --metrics-textfile.")
    var metricsInterval: Double = 15

    @OptionGroup(title: "Key cache and leasing")
    var cache: CacheOptions

    @Option(name: [.customShort("o"), .customLong("options")],
            help: "mount(8)-style options, comma-separated: ro, noexec, noatime, …, and cmkfs's own by name (see below).")
    var options: String?

    @Flag(name: .customLong("read-only"), help: "Mount read-only: the kernel refuses every change with EROFS (same as -o ro).")
    var readOnly = false

    @Option(name: .customLong("ready-fd"), help: .hidden)
    var readyFD: Int32?

    /// The daemon reads the PIN from this inherited pipe (written by `cmkfs mount`), never argv.
    @Option(name: .customLong("pin-fd"), help: .hidden)
    var pinFD: Int32?

    func run() {
        var me = self
        let kernel: [String]
        do { kernel = try me.applyOptions() } catch { fail(error) }
        me.start(kernelOptions: kernel)
    }

    /// Applies -o's cmkfs options to this command's settings (over the same setting given as a
    /// flag, as fstab options override defaults) and returns the options for the kernel mount.
    private mutating func applyOptions() throws(CMKError) -> [String] {
        let parsed = try MountOptions.parse(options ?? "")
        for (name, value) in parsed.cmkfs {
            let v = value ?? ""
            let bad = CMKError(.usage, "mount option \(name)=\(v) is not valid", hint: "see cmkfs mount --help")
            switch name {
            case "kms_dir": kmsDir = v
            case "pin_file", "vault_token_file": pinFile = v
            case "kms_reason": kmsReason = v
            case "pkcs11_uri": pkcs11URI = v
            case "log_level": guard let level = Logger.Level(argument: v) else { throw bad }; logLevel = level
            case "log_to": guard let to = LogDestination(argument: v) else { throw bad }; logTo = to
            case "writeback_cache": writebackCache = true
            case "audit_syslog": auditSyslog = true
            case "cache_idle_ttl": cache.idleTTL = v
            case "cache_max_lifetime": cache.maxLifetime = v
            case "lease_renew": cache.leaseRenew = v
            case "cache_capacity": guard let n = Int(v) else { throw bad }; cache.capacity = n
            case "fuse_transport": guard let t = FuseTransport(rawValue: v) else { throw bad }; fuseTransport = t
            case "metrics_textfile": metricsTextfile = v
            case "metrics_interval": guard let n = Double(v) else { throw bad }; metricsInterval = n
            default: throw bad
            }
        }
        do { try cache.validate() } catch { throw CMKError(.usage, "\(error)", hint: "see cmkfs mount --help") }
        try validateMetrics()
        try applyPKCS11URI()
        if let kmsReason, kmsReason.utf8.count > Self.maxReason || kmsReason.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) {
            throw CMKError(.usage, "--kms-reason must be one line of at most \(Self.maxReason) bytes without control characters",
                           hint: "give a short justification, e.g. --kms-reason 'ticket OPS-1234: nightly backup'")
        }
        return parsed.kernel + (readOnly ? ["ro"] : [])
    }

    /// The textfile's directory must exist (node_exporter's, made by its package) and the
    /// interval be a sane number of seconds; the path is made absolute (the daemon runs in /).
    private mutating func validateMetrics() throws(CMKError) {
        guard metricsInterval.isFinite, metricsInterval >= 1, metricsInterval <= 86_400 else {
            throw CMKError(.usage, "--metrics-interval must be between 1 and 86400 seconds, not \(metricsInterval)",
                           hint: "e.g. --metrics-interval 15 (node_exporter reads the file at each scrape)")
        }
        guard let path = metricsTextfile else { return }
        let file = absolute(path)
        let directory = (file as NSString).deletingLastPathComponent
        guard !path.isEmpty, !file.hasSuffix("/"), let st = try? Descriptor.cwd.stat(directory), (st.st_mode & S_IFMT) == S_IFDIR else {
            throw CMKError(.usage, "--metrics-textfile \(path): directory \(directory) does not exist",
                           hint: "create it, or point to node_exporter's --collector.textfile.directory (files must end in .prom)")
        }
        metricsTextfile = file
    }

    /// `--pkcs11-uri`: its PIN file becomes `--pin-file`; what else it names must be what the
    /// volume records (a URI for another token or key is a mistake, not a choice made at mount).
    private mutating func applyPKCS11URI() throws(CMKError) {
        guard let uri = pkcs11URI else { return }
        let implied = try pkcs11URIFlags(uri)
        let recorded = try Volume.recordedProvider(at: volume)
        guard recorded.kind == ProviderKind.pkcs11.name else {
            throw CMKError(.usage, "--pkcs11-uri: \(absolute(volume)) uses the \(recorded.kind) provider, not pkcs11", hint: "drop --pkcs11-uri")
        }
        let volumes = ["--token": ("token", recorded.tokenLabel), "--key-label": ("object", recorded.keyID),
                       "--pkcs11-module": ("module", recorded.pkcs11Module)]
        for (flag, value) in implied.sorted(by: { $0.key < $1.key }) {
            guard let (attribute, own) = volumes[flag], own != value else { continue }
            throw CMKError(.usage, "--pkcs11-uri names \(attribute) '\(value)', but \(absolute(volume)) uses '\(own ?? "?")'",
                           hint: "leave \(attribute) out of the URI, or give the volume's")
        }
        if let file = implied["--pin-file"] {
            if let pinFile, pinFile != file {
                throw CMKError(.usage, "--pin-file \(pinFile) disagrees with --pkcs11-uri, which says \(file)", hint: "give the PIN file once")
            }
            pinFile = file
        }
    }

    private func start(kernelOptions: [String]) {
        let mnt = absolute(mountpoint)
        if foreground {
            // Before anything can log: the volume's provider may already report while opening.
            MountLog.configure(level: logLevel, destination: logTo)
            serve(mnt, kernelOptions: kernelOptions)
        } else {
            reporting { () throws(CMKError) in try startDaemon(mnt, kernelOptions: kernelOptions) }
        }
    }

    /// The PKCS#11 PIN when the volume's provider needs one: from the parent's pipe in the
    /// daemon, else from --pin-file, $CMKFS_PKCS11_PIN or the terminal.
    private func pin() throws(CMKError) -> SecretBytes? {
        if let pinFD {
            let pipe = FileDescriptor(adopting: pinFD)
            return PINSource.fromDescriptor(pipe.descriptor)
        }
        return try PINSource.forVolume(volume, pinFile: pinFile, promptAtTerminal: true)
    }

    /// Checks everything a person could get wrong before any process is started.
    private func preflight(_ mnt: String, pin: SecretBytes?) throws(CMKError) -> Volume {
        // Refuse a live volume before opening its database: even a read touches meta.db-shm.
        if let holder = MountLock.holder(volumePath: absolute(volume)) {
            throw CMKError(.alreadyMounted, "\(absolute(volume)) is already mounted at \(holder.mountpoint) (pid \(holder.pid))",
                           hint: "unmount it first: cmkfs unmount \(holder.mountpoint)")
        }
        let v: Volume
        do {
            v = try Volume.open(at: volume, kmsDir: kmsDir, pin: pin, purpose: "mount", kmsReason: kmsReason, metrics: Metrics.shared.provider)
        } catch {
            // The audit log needs the key that was just refused: note the denial for later.
            Volume.notePendingDenial(volume: volume, event: "mount-denied", error: error, detail: "mount at \(mnt)")
            throw error
        }
        let st: stat
        do { st = try Descriptor.cwd.stat(mnt) } catch {
            switch error.errno.rawValue {
            case ENOENT:
                throw CMKError(.mountpoint, "mountpoint \(mnt) does not exist", hint: "create it: mkdir -p \(mnt)")
            case ENOTCONN, ECONNABORTED:
                throw CMKError(.mountpoint, "\(mnt) is a stale FUSE mount whose daemon is gone",
                               hint: "clear it: fusermount3 -u -z \(mnt)")
            default:
                throw CMKError(.mountpoint, "cannot use mountpoint \(mnt): \(error.errno)")
            }
        }
        guard (st.st_mode & S_IFMT) == S_IFDIR else { throw CMKError(.mountpoint, "mountpoint \(mnt) is not a directory") }
        if let existing = MountTable.entry(at: mnt) {
            throw CMKError(.mountpoint, "\(mnt) is busy: \(existing.source) (\(existing.type)) is mounted there",
                           hint: "unmount it first, or choose another mountpoint")
        }
        if mnt == v.path || mnt.hasPrefix(v.path + "/") {
            throw CMKError(.mountpoint, "mountpoint \(mnt) is inside the volume \(v.path)", hint: "choose a mountpoint outside the volume")
        }
        if let holder = MountLock.holder(volumePath: v.path) {
            throw CMKError(.alreadyMounted, "\(v.path) is already mounted at \(holder.mountpoint) (pid \(holder.pid))",
                           hint: "unmount it first: cmkfs unmount \(holder.mountpoint)")
        }
        return v
    }

    /// The daemon: mount and serve until unmounted.
    private func serve(_ mnt: String, kernelOptions: [String]) {
        // Before the daemon starts its threads: with glibc's default (an arena per busy thread,
        // up to 16 on two cores) the inodes of 100,000 files were spread over a dozen heaps,
        // each with its own free space resident (docs/operator-guide.md, "Daemon memory").
        do { try ProcessControls.limitMallocArenas(to: Self.mallocArenas) } catch {
            FileSystem.logger.warning("cannot limit malloc arenas: \(error)")
        }
        // Unwrapped keys live in this process from here on: no core file, no ptrace or
        // /proc/PID/mem for anyone without CAP_SYS_PTRACE (docs/threat-model.md).
        let dump = SecretMemory.forbidCoreDumps()
        if dump != 0 { FileSystem.logger.warning("cannot make the mount daemon non-dumpable: \(String(cString: strerror(dump)))") }
        // Under a Type=notify unit (the daemon is systemd's main process, started with
        // --foreground); a daemon started by `cmkfs mount` is not the process systemd watches.
        let notifier = readyFD == nil ? ServiceNotifier.fromEnvironment() : nil
        notifier?.send(["STATUS": "opening \(absolute(volume)) for \(mnt)"])
        do {
            let v = try preflight(mnt, pin: try pin())
            let lock = try MountLock.acquire(v, mountpoint: mnt)
            let audit = try openAudit(v, mnt)
            let fs = try FileSystem(volume: v, policy: cache.policy, audit: audit, writebackCache: writebackCache,
                                    transport: fuseTransport)
            let textfile = metricsTextfile.map { MetricsTextfile(path: $0, interval: metricsInterval, render: { fs.metricsText() }) }
            if readyFD != nil { try? ProcessControls.changeDirectory(to: "/") }
            FileSystem.logger.info("mounting \(v.path) at \(mnt)")
            let readyFD = readyFD, volumePath = v.path
            try FuseMount.run(fs, at: mnt, kernelOptions: kernelOptions, ready: {
                if let readyFD {
                    let ready = FileDescriptor(adopting: readyFD)
                    try? ready.descriptor.writeAll(Array("ready\n".utf8))
                } else {
                    // The background mode's parent does this once told "ready".
                    Self.tuneReadahead(mnt)
                }
                textfile?.start()
                notifier?.send(["READY": "1", "STATUS": "serving \(volumePath) at \(mnt)"])
            }, stopping: {
                notifier?.send(["STOPPING": "1", "STATUS": "unmounting \(mnt)"])
            })
            textfile?.finish()
            FileSystem.logger.info("unmounted \(mnt)")
            do {
                try audit?.append(.command("unmount", detail: "unmounted \(mnt)"), durable: true)
                try audit?.close()
            } catch { FileSystem.logger.error("audit: cannot record the unmount: \(error)") }
            withExtendedLifetime(lock) {}
        } catch {
            if let readyFD {
                let line = ["error", String(error.code.rawValue), error.message, error.hint ?? ""].joined(separator: "\t") + "\n"
                let ready = FileDescriptor(adopting: readyFD)
                try? ready.descriptor.writeAll(Array(line.utf8))
            }
            notifier?.send(["STATUS": "mount refused: \(error.message)"])
            // The error line below goes to stderr only; with --log-to syslog say it there too.
            if logTo == .syslog { FileSystem.logger.error("mount of \(absolute(volume)) at \(mnt) refused: \(error.message)") }
            fail(error)
        }
    }

    /// The mount's audit log, with its `mount` record durable and group commit running, and
    /// with --audit-syslog its copy to journald or syslog; nil only under
    /// CMKFS_AUDIT_DISABLE_FOR_BENCHMARK=1 (bench/audit-open-rate.sh: never in production).
    private func openAudit(_ v: Volume, _ mnt: String) throws(CMKError) -> (any AuditSink)? {
        if ProcessInfo.processInfo.environment["CMKFS_AUDIT_DISABLE_FOR_BENCHMARK"] == "1" {
            FileSystem.logger.critical("AUDIT DISABLED (CMKFS_AUDIT_DISABLE_FOR_BENCHMARK=1): key uses are NOT recorded; benchmark only")
            return nil
        }
        let log = try v.openAuditLog(mountpoint: mnt, onFailure: { FileSystem.logger.error("audit: group commit failed: \($0)") })
        let sink: any AuditSink
        if auditSyslog {
            let copy = AuditCopy.forHost()
            FileSystem.logger.info("audit: each record is also sent to \(copy.transport.rawValue) at \(copy.socketPath)")
            sink = AuditFanOut(local: log, copies: [copy])
        } else {
            sink = log
        }
        do {
            try sink.append(.command("mount", keyID: v.activeKey.keyID, keyVersion: v.activeKey.version,
                                    detail: "mounted at \(mnt); cache idle \(cache.policy.idleTTL) s, lifetime \(cache.policy.maxLifetime) s"),
                           durable: true)
        } catch { throw CMKError(error) }
        FileSystem.logger.info("audit log \(v.auditPath): \(log.count) records; chattr +a \(log.appendOnlyState); \(log.anchorState)")
        if let gap = log.gap { FileSystem.logger.error("audit: records are missing, recorded as an audit-gap: \(gap)") }
        // meta.db's checkpoints run on the group-commit thread from now on, not on the request
        // thread whose commit happens to fill the WAL (nor its WAL restart's header sync).
        do { try v.metadata.deferCheckpoints() } catch {
            FileSystem.logger.error("meta.db: checkpoints stay on the committing threads: \(error)")
        }
        log.startGroupCommit(every: AuditLog.groupCommitInterval)
        return sink
    }

    /// Starts `cmkfs mount --foreground` in a new session and waits until it reports the mount ready.
    private func startDaemon(_ mnt: String, kernelOptions: [String]) throws(CMKError) {
        let pin = try pin()
        let v = try preflight(mnt, pin: pin)
        // Close-on-exec on both ends: the child gets the write end only as fd 3 (dup2 clears the
        // flag there), so the read end sees EOF as soon as the daemon closes it or dies.
        let ready = try Self.pipe()
        let devnull = try Self.open("/dev/null", O_RDWR | O_CLOEXEC)
        // Without its log file the daemon still runs, its stderr on /dev/null.
        let log: FileDescriptor
        do { log = try FileDescriptor.open(v.logPath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, mode: 0o600) } catch {
            log = try Self.open("/dev/null", O_RDWR | O_CLOEXEC)
        }
        var args = ["mount", v.path, mnt, "--foreground", "--ready-fd", "3"]
        if let kmsDir { args += ["--kms-dir", absolute(kmsDir)] }
        if let kmsReason { args += ["--kms-reason", kmsReason] }
        args += ["--log-level", logLevel.rawValue, "--log-to", logTo.rawValue]
        args += cache.arguments
        if writebackCache { args.append("--writeback-cache") }
        if fuseTransport != .devFuse { args += ["--fuse-transport", fuseTransport.rawValue] }
        if let metricsTextfile { args += ["--metrics-textfile", metricsTextfile, "--metrics-interval", "\(metricsInterval)"] }
        if auditSyslog { args.append("--audit-syslog") }
        if !kernelOptions.isEmpty { args += ["-o", kernelOptions.joined(separator: ",")] }
        var extra = [(ready.writing.rawValue, Int32(3))]
        let pinPipe = try Self.pinPipe(pin)
        if pin != nil {
            extra.append((pinPipe.rawValue, 4))
            args += ["--pin-fd", "4"]
        }
        guard let pid = Spawn.start(Spawn.selfPath, args, stdin: devnull.rawValue, stdout: devnull.rawValue, stderr: log.rawValue,
                                    extra: extra, newSession: true) else {
            throw CMKError(.mountFailed, "cannot start the mount daemon")
        }
        try? ready.writing.close()
        let reply = readLine(ready.reading.descriptor, timeoutSeconds: 60)
        try? ready.reading.close()
        if reply == "ready" {
            Self.tuneReadahead(mnt)
            print("mounted \(v.path) at \(mnt) (pid \(pid))")
            return
        }
        let fields = reply?.split(separator: "\t", omittingEmptySubsequences: false).map(String.init) ?? []
        if fields.count == 4, fields[0] == "error", let raw = Int32(fields[1]), let code = CMKError.Code(rawValue: raw) {
            _ = Spawn.wait(pid)
            throw CMKError(code, fields[2], hint: fields[3].isEmpty ? nil : fields[3])
        }
        if reply == nil { try? ChildProcess.signal(pid, SIGTERM) }
        let status = Spawn.wait(pid)
        throw CMKError(.mountFailed, "the mount daemon exited (status \(status)) before the mount was ready",
                       hint: "see \(v.logPath)")
    }

    private static func pipe() throws(CMKError) -> PipeEnds {
        do { return try PipeEnds() } catch { throw CMKError(.internalError, "\(error)") }
    }

    private static func open(_ path: String, _ flags: Int32) throws(CMKError) -> FileDescriptor {
        do { return try FileDescriptor.open(path, flags) } catch { throw CMKError(.internalError, "\(error)") }
    }

    /// A pipe already holding `pin` (nothing when there is none), then EOF; returns the read
    /// end, close-on-exec, for the daemon to inherit as fd 4 (this process closes its copy when
    /// the daemon has started). The PIN never appears in argv or the daemon's environment.
    private static func pinPipe(_ pin: SecretBytes?) throws(CMKError) -> FileDescriptor {
        let ends = try pipe()
        if let pin {
            do { try pin.withUnsafeBytes { raw in Result { () throws(SystemError) in try ends.writing.descriptor.writeAll(raw) } }.get() } catch {
                throw CMKError(.internalError, "cannot pass the PIN to the mount daemon")
            }
        }
        return ends.reading
    }

    /// One line from `fd`, or nil on EOF or timeout.
    private func readLine(_ fd: Descriptor, timeoutSeconds: Int32) -> String? {
        var bytes = [UInt8]()
        let deadline = Date().addingTimeInterval(TimeInterval(timeoutSeconds))
        while Date() < deadline {
            guard let events = try? fd.poll(Int16(POLLIN), timeoutMilliseconds: 250), events != 0 else { continue }
            guard let byte = try? fd.read(upTo: 1).first else { return nil }
            if byte == UInt8(ascii: "\n") { return String(decoding: bytes, as: UTF8.self) }
            bytes.append(byte)
        }
        return nil
    }

    /// Raises the mount's read-ahead to 1 MiB so large sequential reads reach the daemon as 1 MiB
    /// requests (libfuse's max_readahead alone is capped by the bdi setting).
    private static func tuneReadahead(_ mnt: String) {
        guard let st = try? Descriptor.cwd.stat(mnt) else { return }
        let major = (st.st_dev >> 8) & 0xFFF, minor = (st.st_dev & 0xFF) | ((st.st_dev >> 12) & 0xFFF00)
        try? "1024".write(toFile: "/sys/class/bdi/\(major):\(minor)/read_ahead_kb", atomically: false, encoding: .utf8)
    }
}

extension Logger.Level: @retroactive ExpressibleByArgument {}
extension LogDestination: ExpressibleByArgument {}
extension FuseTransport: ExpressibleByArgument {}
