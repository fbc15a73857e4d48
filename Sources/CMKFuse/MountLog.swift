import Glibc
import Logging
import Synchronization
import CMKSystem

/// Where the mount daemon's log lines go (`cmkfs mount --log-to`).
public enum LogDestination: String, Sendable, CaseIterable {
    /// One line per message on stderr: `VOLUME/mount.log` for a background mount, the
    /// terminal or the supervisor's journal with `--foreground`.
    case stderr
    /// syslog(3)'s datagram socket (`/dev/log`), which journald also reads.
    case syslog
}

/// The mount daemon's logger. The level and destination are set once, by `cmkfs mount`,
/// before the volume is opened; until then (and in any process that never configures it)
/// messages at `info` and above go to stderr.
///
/// Nothing logged may carry a secret: no key bytes, no PIN, no file contents, and no plaintext
/// file name of a volume that encrypts names (the log names files by file id, inode or backing
/// path). docs/operator-guide.md ("Logs") promises this and SecretsInLogsTests checks it.
public enum MountLog {
    private static let current = Mutex(Logger(label: "cmkfs") { _ in StderrLogHandler(logLevel: .info) })

    /// The configured logger (a copy: loggers are values, the handler writes one line at a time).
    public static var logger: Logger { current.withLock { $0 } }

    /// Sets the level and destination for the rest of the process.
    public static func configure(level: Logger.Level, destination: LogDestination) {
        let logger: Logger
        switch destination {
        case .stderr: logger = Logger(label: "cmkfs") { _ in StderrLogHandler(logLevel: level) }
        case .syslog: logger = Logger(label: "cmkfs") { _ in SyslogLogHandler(logLevel: level) }
        }
        current.withLock { $0 = logger }
    }
}

extension FileSystem {
    /// The mount's logger (`MountLog.logger`), so call sites read `Self.logger.error(…)`.
    public static var logger: Logger { MountLog.logger }
}

/// One line on file descriptor 2, in one write(2) unless the kernel takes it in parts.
private func writeToStderr(_ line: String) {
    var line = line
    line.withUTF8 { bytes in _ = try? Descriptor(rawValue: STDERR_FILENO).writeAll(UnsafeRawBufferPointer(bytes)) }
}

/// Metadata is printed after the message as ` key=value`, sorted, so a line stays greppable.
private func render(_ message: Logger.Message, _ own: Logger.Metadata, _ extra: Logger.Metadata?) -> String {
    var all = own
    if let extra { all.merge(extra) { _, new in new } }
    guard !all.isEmpty else { return message.description }
    return message.description + all.sorted { $0.key < $1.key }.map { " \($0.key)=\($0.value)" }.joined()
}

/// `2026-11-24T02:53:39.123Z cmkfs[PID] LEVEL: message` on file descriptor 2, written with one
/// write(2) so lines from concurrent FUSE threads never interleave.
public struct StderrLogHandler: LogHandler {
    public var logLevel: Logger.Level
    public var metadata: Logger.Metadata = [:]

    public init(logLevel: Logger.Level) { self.logLevel = logLevel }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        writeToStderr("\(Self.timestamp()) cmkfs[\(getpid())] \(event.level): \(render(event.message, metadata, event.metadata))\n")
    }

    /// UTC, millisecond precision: mount.log is read beside the audit log, which uses UTC too.
    static func timestamp() -> String {
        var tv = timeval()
        gettimeofday(&tv, nil)
        var seconds = tv.tv_sec
        var parts = tm()
        gmtime_r(&seconds, &parts)
        var buffer = [CChar](repeating: 0, count: 32)
        let n = strftime(&buffer, buffer.count, "%Y-%m-%dT%H:%M:%S", &parts)
        let head = String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let millis = Int(tv.tv_usec) / 1000
        return head + "." + String(repeating: "0", count: millis < 10 ? 2 : millis < 100 ? 1 : 0) + String(millis) + "Z"
    }
}

/// Sends each message to the local syslog socket as `<PRI>cmkfs[PID]: message` (facility
/// daemon), the datagram syslog(3) sends; journald and rsyslog both read it. Written here
/// rather than through syslog(3) (variadic, and its socket path is fixed) so the socket can
/// be `CMKFS_SYSLOG_SOCKET` in tests. A message the socket does not take goes to stderr
/// instead: a log line is never dropped silently.
public struct SyslogLogHandler: LogHandler {
    public var logLevel: Logger.Level
    public var metadata: Logger.Metadata = [:]

    public init(logLevel: Logger.Level) { self.logLevel = logLevel }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    /// The connected datagram socket, opened on first use and reopened after a failure (the
    /// journal may restart under a long-running mount). Owned by hand, as a bare descriptor:
    /// it lives for the process, and is replaced only under this mutex.
    private static let socket = Mutex<Int32>(-1)

    static var path: String {
        if let p = getenv("CMKFS_SYSLOG_SOCKET") { return String(cString: p) }
        return "/dev/log"
    }

    public func log(event: LogEvent) {
        let text = render(event.message, metadata, event.metadata)
        // Facility LOG_DAEMON (3 << 3) plus the severity.
        let priority = 3 * 8 + Self.severity(event.level)
        let datagram = Array("<\(priority)>cmkfs[\(getpid())]: \(text)".utf8)
        let sent = Self.socket.withLock { fd -> Bool in
            for _ in 0..<2 {
                if fd < 0 { fd = Self.connect() }
                guard fd >= 0 else { return false }
                if datagram.withUnsafeBytes({ try? Descriptor(rawValue: fd).send($0) }) == datagram.count {
                    return true
                }
                try? FileDescriptor(adopting: fd).close()
                fd = -1
            }
            return false
        }
        if !sent {
            writeToStderr("\(StderrLogHandler.timestamp()) cmkfs[\(getpid())] \(event.level): (syslog unavailable) \(text)\n")
        }
    }

    static func severity(_ level: Logger.Level) -> Int {
        switch level {
        case .trace, .debug: return 7   // LOG_DEBUG
        case .info: return 6            // LOG_INFO
        case .notice: return 5          // LOG_NOTICE
        case .warning: return 4         // LOG_WARNING
        case .error: return 3           // LOG_ERR
        case .critical: return 2        // LOG_CRIT
        }
    }

    /// A datagram socket connected to `path`, or -1.
    private static func connect() -> Int32 {
        guard let address = UnixSocketAddress(path: path), let socket = try? FileDescriptor.socket(AF_UNIX, SOCK_DGRAM),
              (try? socket.descriptor.connect(to: address)) != nil else { return -1 }
        return socket.release()
    }
}
