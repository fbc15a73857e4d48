import Dispatch
import Foundation
import Glibc
import Synchronization
import CMKSystem

/// A copy of each audit record sent to the host's journal or syslog as it is written
/// (`cmkfs mount --audit-syslog`), so a SIEM holds the records even if the volume's log is later
/// cut by someone with root on the host — up to what was sent before.
///
/// **Protocol.** journald's native protocol when its socket exists (`/run/systemd/journal/socket`,
/// `CMKFS_AUDIT_JOURNAL_SOCKET`): one datagram a record, with every field of the record as a
/// `CMKFS_<FIELD>` journal field (`journalctl CMKFS_EVENT=revoke`), the record as logged in
/// `CMKFS_RECORD` and a one-line `MESSAGE`; fields are indexed, a record is never cut at a syslog
/// line limit, and journal forwarders (`systemd-journal-upload`, rsyslog imjournal, fluent-bit)
/// carry the fields. Else syslog's datagram (`/dev/log`, `CMKFS_AUDIT_SYSLOG_SOCKET`) in the
/// format syslog(3) writes (`<PRI>Mmm dd hh:mm:ss cmkfs[PID]: `) with the record's JSON line as
/// the message, facility authpriv. Written here, not through syslog(3): syslog(3) blocks when
/// the socket's queue is full and cannot be pointed at another socket for a test.
///
/// **Never in the way.** `offer` appends to a bounded queue (`capacity` records) and returns;
/// one thread sends, non-blocking, waiting at most 100 ms for room in the socket. A record the
/// queue has no room for, or that cannot be sent (no journald, socket full, too large), is
/// dropped and counted; every `reportInterval` seconds with drops, and at `finish`, the count
/// is reported as an `audit-copy-dropped` record (result `error`) in the local log.
///
/// **What is sent.** The record as logged: `path` sealed (the copy leaves the volume's
/// protection as the log does not: the names stay sealed; `file` is the join key, and
/// `audit export` opens them), MAC included, so the SIEM can check the copy against the log.
public final class AuditCopy: Sendable {
    public enum Transport: String, Sendable { case journal, syslog }
    public let transport: Transport
    public let socketPath: String
    /// nil for a path longer than an AF_UNIX address holds (every send then fails, counted).
    let address: UnixSocketAddress?
    let capacity: Int
    let reportInterval: Double

    struct State {
        var queue: [[UInt8]] = []
        var droppedFull = 0
        var droppedSend = 0
        var lastError: Int32 = 0
        /// Drops not yet reported, and since when.
        var unreported = 0
        var since: String?
        var finishing = false
        var sent = 0
    }
    let state = Mutex(State())
    let wake = DispatchSemaphore(value: 0)
    let done = DispatchSemaphore(value: 0)
    /// Set once by `start` before the thread runs; read only by that thread.
    let reporter = Mutex<(@Sendable (AuditEvent) -> Void)?>(nil)

    public static let defaultJournalSocket = "/run/systemd/journal/socket"
    public static let defaultSyslogSocket = "/dev/log"

    /// The copy for this host: journald if its socket is there, else syslog.
    public static func forHost(environment: [String: String] = ProcessInfo.processInfo.environment,
                               capacity: Int = 4096, reportInterval: Double = 10) -> AuditCopy {
        let journal = environment["CMKFS_AUDIT_JOURNAL_SOCKET"] ?? defaultJournalSocket
        var st = stat()
        if stat(journal, &st) == 0 && (st.st_mode & S_IFMT) == S_IFSOCK {
            return AuditCopy(transport: .journal, socket: journal, capacity: capacity, reportInterval: reportInterval)
        }
        return AuditCopy(transport: .syslog, socket: environment["CMKFS_AUDIT_SYSLOG_SOCKET"] ?? defaultSyslogSocket,
                         capacity: capacity, reportInterval: reportInterval)
    }

    public init(transport: Transport, socket: String, capacity: Int = 4096, reportInterval: Double = 10) {
        self.transport = transport
        socketPath = socket
        address = UnixSocketAddress(path: socket)
        self.capacity = capacity
        self.reportInterval = reportInterval
    }

    /// Starts the sending thread; `report` records a drop report in the local log.
    func start(report: @escaping @Sendable (AuditEvent) -> Void) {
        reporter.withLock { $0 = report }
        Thread.detachNewThread { [self] in run() }
    }

    /// Queues `line` (a record as logged, newline included) without waiting.
    func offer(_ line: [UInt8]) {
        let queued = state.withLock { s -> Bool in
            guard !s.finishing, s.queue.count < capacity else {
                s.droppedFull += 1
                s.unreported += 1
                if s.since == nil { s.since = AuditRecord.now() }
                return false
            }
            s.queue.append(line)
            return true
        }
        if queued { wake.signal() }
    }

    /// Records sent, dropped for a full queue, dropped by the socket.
    public var counts: (sent: Int, droppedFull: Int, droppedSend: Int) {
        state.withLock { ($0.sent, $0.droppedFull, $0.droppedSend) }
    }

    /// Sends what is queued (for at most `deadline` seconds; the rest is dropped), stops the
    /// thread and returns the drop report not yet made, if any.
    func finish(deadline: Double = 2) -> AuditEvent? {
        // A second finish (a second close) has nothing left to wait for.
        guard state.withLock({ s in defer { s.finishing = true }; return !s.finishing }) else { return nil }
        wake.signal()
        if done.wait(timeout: .now() + deadline) == .timedOut {
            state.withLock { s in
                s.droppedFull += s.queue.count
                s.unreported += s.queue.count
                s.queue.removeAll()
            }
        }
        return state.withLock { takeReport(&$0) }
    }

    func takeReport(_ s: inout State) -> AuditEvent? {
        guard s.unreported > 0 else { return nil }
        let why = s.lastError != 0 ? "; last send error: \(Errno(rawValue: s.lastError).symbol) (\(String(cString: strerror(s.lastError))))" : ""
        let event = AuditEvent(Self.droppedEvent, result: "error",
                               detail: "\(s.unreported) records not copied to \(transport.rawValue) (\(socketPath)) since \(s.since ?? "?"); "
                                   + "in all \(s.droppedFull) for a full queue (\(capacity)), \(s.droppedSend) not sent\(why)")
        s.unreported = 0
        s.since = nil
        return event
    }

    public static let droppedEvent = "audit-copy-dropped"

    func run() {
        defer { done.signal() }
        do {
            let file = try FileDescriptor.socket(AF_UNIX, SOCK_DGRAM)
            serve(file.descriptor)
        } catch {
            // No socket at all: every record is dropped, and reported.
            serve(nil)
        }
    }

    /// Sends what is queued until `finish`; reports drops every `reportInterval` seconds.
    func serve(_ fd: Descriptor?) {
        var lastReport = Self.monotonic()
        while true {
            _ = wake.wait(timeout: .now() + 1)
            let (batch, finishing) = state.withLock { s -> ([[UInt8]], Bool) in
                let b = s.queue
                s.queue.removeAll(keepingCapacity: true)
                return (b, s.finishing)
            }
            for line in batch {
                let rc = fd.map { send($0, datagram(line)) } ?? EBADF
                state.withLock { s in
                    if rc == 0 { s.sent += 1; return }
                    s.droppedSend += 1
                    s.unreported += 1
                    s.lastError = rc
                    if s.since == nil { s.since = AuditRecord.now() }
                }
            }
            if finishing && state.withLock({ $0.queue.isEmpty }) { return }
            let now = Self.monotonic()
            if now - lastReport >= reportInterval, let event = state.withLock({ takeReport(&$0) }) {
                lastReport = now
                reporter.withLock { $0 }?(event)
            }
        }
    }

    /// Sends one datagram without blocking (MSG_DONTWAIT); 0 or the errno. A full socket is
    /// given 100 ms to make room, once.
    func send(_ fd: Descriptor, _ bytes: [UInt8]) -> Int32 {
        guard let address else { return ENAMETOOLONG }
        for attempt in 0..<2 {
            let sent = bytes.withUnsafeBytes { b in
                Result { () throws(SystemError) in try fd.send(b, to: address, flags: Int32(MSG_NOSIGNAL) | Int32(MSG_DONTWAIT)) }
            }
            switch sent {
            case .success(let n):
                return n == bytes.count ? 0 : EMSGSIZE
            case .failure(let error):
                let code = error.errno.rawValue
                guard attempt == 0, code == EAGAIN || code == ENOBUFS else { return code }
                _ = try? fd.poll(Int16(POLLOUT), timeoutMilliseconds: 100)
            }
        }
        return EAGAIN
    }

    /// The datagram for one record line (newline included).
    func datagram(_ line: [UInt8]) -> [UInt8] {
        let record = line.last == 0x0A ? line.dropLast() : line[...]
        switch transport {
        case .journal: return Self.journalEntry(record)
        case .syslog: return Self.syslogLine(record)
        }
    }

    /// journald's native format: `NAME=value\n`, or `NAME\n` + 64-bit LE length + value + `\n`
    /// for a value with a newline.
    static func journalEntry(_ record: ArraySlice<UInt8>) -> [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(record.count * 3 + 256)
        func add(_ name: String, _ value: some Collection<UInt8>) {
            out += Array(name.utf8)
            if value.contains(0x0A) {
                out.append(0x0A)
                var n = UInt64(value.count).littleEndian
                withUnsafeBytes(of: &n) { out += $0 }
                out += value
            } else {
                out.append(UInt8(ascii: "="))
                out += value
            }
            out.append(0x0A)
        }
        let fields = AuditRecordScan.fields(record) ?? []
        func text(_ key: String) -> String? {
            guard let v = fields.first(where: { $0.key.elementsEqual(key.utf8) })?.value, !v.elementsEqual("null".utf8) else { return nil }
            return v.first == UInt8(ascii: "\"") ? AuditRecordScan.string(v) : String(decoding: v, as: UTF8.self)
        }
        let result = text("result") ?? "ok"
        add("MESSAGE", Array("cmkfs audit: \(text("event") ?? "?") \(result) seq \(text("seq") ?? "?")".utf8)
                + (text("process").map { Array(" by \($0)".utf8) } ?? [])
                + (text("uid").map { Array(" uid \($0)".utf8) } ?? [])
                + (text("file").map { Array(" file \($0)".utf8) } ?? []))
        add("PRIORITY", Array((result == "ok" ? "6" : "4").utf8))
        add("SYSLOG_FACILITY", Array("10".utf8))
        add("SYSLOG_IDENTIFIER", Array("cmkfs".utf8))
        for (key, value) in fields where !value.elementsEqual("null".utf8) {
            let name = "CMKFS_" + String(decoding: key, as: UTF8.self).uppercased().map { $0.isLetter || $0.isNumber ? $0 : "_" }
            if value.first == UInt8(ascii: "\"") {
                add(String(name), Array((AuditRecordScan.string(value) ?? "").utf8))
            } else {
                add(String(name), value)
            }
        }
        add("CMKFS_RECORD", record)
        return out
    }

    /// syslog(3)'s datagram: `<PRI>Mmm dd hh:mm:ss cmkfs[PID]: ` and the record (authpriv).
    static func syslogLine(_ record: ArraySlice<UInt8>) -> [UInt8] {
        let denied = !(record.firstRange(of: Array(#","result":"ok","#.utf8)) != nil)
        let priority = 10 * 8 + (denied ? 4 : 6)
        var t = time(nil)
        var tm = tm()
        localtime_r(&t, &tm)
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        func two(_ v: Int32) -> String { v < 10 ? "0\(v)" : "\(v)" }
        let day = tm.tm_mday < 10 ? " \(tm.tm_mday)" : "\(tm.tm_mday)"
        let head = "<\(priority)>\(months[Int(tm.tm_mon)]) \(day) \(two(tm.tm_hour)):\(two(tm.tm_min)):\(two(tm.tm_sec)) cmkfs[\(getpid())]: "
        return Array(head.utf8) + record
    }

    static func monotonic() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }
}
