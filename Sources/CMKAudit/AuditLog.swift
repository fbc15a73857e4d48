import Foundation
import Glibc
import Synchronization
import CMKSystem
import CMKCrypto
import CMKMetrics

/// The writer of a volume's audit log: `VOLUME/audit/audit-<first seq>.log` segments, one record
/// a line, chained by MAC under the audit key (docs/audit-format.md).
///
/// One writer per volume at a time: `audit/writer.lock` is `flock`ed for the writer's lifetime
/// (the mount holds it while mounted; commands that write records while the volume is mounted ask
/// the mount to write them). Segments are opened `O_APPEND` and, where the filesystem and the
/// capabilities allow, made append-only (`chattr +a`).
///
/// Durability: `append` writes the record with one `write(2)` before it returns (it then survives
/// a crash of the process); `append(durable: true)` and `sync()` also `fsync` it and save a
/// checkpoint before they return, concurrent ones sharing one fsync (group commit, see `sync`).
/// `startGroupCommit` syncs every interval while records are pending, which bounds how long an
/// open's record can be lost to a power cut.
///
/// Continuity (docs/audit-format.md): `open` compares the log with the last checkpoint and the
/// anchor kept outside the volume, and chains an `audit-gap` record from the known head when
/// records are missing, never re-basing on what it found. Paths are sealed (record format 2).
public final class AuditLog: Sendable {
    public let directory: String
    let key: SecretBytes
    /// Seals the `path` of every record (format 2): no name in clear under the volume.
    let paths: AuditPathSeal
    let volumeID: String
    let host: String
    /// This writer's record ids (a fresh random session each open), mountpoint and version.
    public let writer: AuditWriterFields
    /// The fields above as every record writes them, escaped once (`AuditRecord.prepare`).
    let constants: AuditRecordConstants
    let checkpoints: (any AuditCheckpointStore)?
    /// The head's anchor outside the volume (the key provider), moved by the group commit after
    /// durable records and at most every `anchorInterval` seconds, and by `close`.
    let anchor: (any AuditAnchorStore)?
    let anchorInterval: Double
    let segmentLimit: Int
    let lock: FileDescriptor
    /// Called from the group-commit thread when a background sync fails (for the mount log).
    let onFailure: @Sendable (AuditError) -> Void

    /// The head of the chain and the open segment.
    struct Head: ~Copyable {
        /// The open segment; nil before the first record and after a torn one. Set it with
        /// `setFile`, which keeps `fd` with it.
        var file: FileDescriptor?
        /// The segment's descriptor, for the calls (a noncopyable optional cannot lend it through `?.`).
        var fd: Descriptor?

        /// Makes `new` the open segment, closing the one before.
        mutating func setFile(_ new: consuming FileDescriptor?) {
            switch consume new {
            case .some(let f):
                fd = f.descriptor
                file = consume f
            case .none:
                fd = nil
                file = nil
            }
        }
        var path = ""
        var bytes = 0
        /// The segment's allocated end (fallocate with KEEP_SIZE): appends up to here need no
        /// new blocks, so records still get written when the disk fills up.
        var reserved = 0
        var seq: UInt64 = 0
        var prev = AuditRecord.genesis
        var unsynced = false
        var closed = false
        var appendOnly: String = "not tried"
        /// The audit key's HMAC context, used for each record under this lock (one owner at a
        /// time, as it needs); nil: each record MACs with a one-shot context (`AuditRecord.line(seq:…)`).
        var mac: HMACSHA256.Keyed?
    }
    /// Lock order: `syncing` before `head`. `head` is held for one `write(2)` (and the rare
    /// segment roll), never across an fsync or a checkpoint save.
    let head: Mutex<Head>
    /// Serializes syncs (fsync and checkpoint), held across them.
    struct Synced {
        /// The last checkpointed seq (checkpoints only move forward).
        var checkpointed: UInt64 = 0
        /// fsyncs of the log made by syncs, for tests (fsyncs per record).
        var fsyncs = 0
    }
    let syncing = Mutex(Synced())
    /// Group commit of durable appends: one leader syncs while the others wait on it.
    let commit = GroupCommit()
    /// The last anchored seq, when (monotonic seconds), and the highest seq of a durable record
    /// that asked for an anchor at the next group commit: a seq, not a flag, so that a request
    /// made while an anchor write is under way outlives the end of that write.
    struct Anchored { var seq: UInt64 = 0; var at: Double = 0; var requested: UInt64 = 0 }
    let anchored = Mutex(Anchored())
    /// Serializes anchor writes (one provider call at a time, so a slower older write cannot
    /// land after a newer one). Held across the provider call: sound because only the
    /// group-commit thread and `close` take it — no FUSE request and no durable append waits on it.
    let anchoring = Mutex(())
    /// When `sync` writes the anchor.
    enum AnchorMode { case never, ifDue, now }
    /// What the opener found about the anchor, for the mount log and `audit verify`.
    public let anchorState: String
    /// What was missing when this writer opened the log (it chained an `audit-gap` record for
    /// it), or nil: for the mount log's error line.
    public let gap: String?

    /// Disk space kept allocated ahead of the segment's end (about 2,500 records): when the
    /// volume's disk fills, files stay readable (their opens are still recorded) while the
    /// operator frees space. Renewed when less than a quarter is left.
    public static let reserveBytes = 1 << 20

    /// How often pending records are fsynced and checkpointed: the bound on how many seconds
    /// of open records a power cut can lose (a crash of the process loses none).
    public static let groupCommitInterval = 0.1

    /// The default segment size: 64 MiB (`CMKFS_AUDIT_SEGMENT_BYTES` overrides it, for tests).
    public static var defaultSegmentLimit: Int {
        ProcessInfo.processInfo.environment["CMKFS_AUDIT_SEGMENT_BYTES"].flatMap(Int.init).map { max(1024, $0) } ?? 64 << 20
    }

    /// How often the group commit moves the anchor forward (a provider round trip, never on
    /// the path of an open): the window of records a rollback of the whole volume can hide.
    public static var defaultAnchorInterval: Double {
        ProcessInfo.processInfo.environment["CMKFS_AUDIT_ANCHOR_SECONDS"].flatMap(Double.init).map { max(0, $0) } ?? 5
    }

    init(directory: String, key: SecretBytes, paths: AuditPathSeal, volumeID: String, checkpoints: (any AuditCheckpointStore)?,
         anchor: (any AuditAnchorStore)?, anchorInterval: Double, anchorState: String, gap: String?,
         segmentLimit: Int, lock: consuming FileDescriptor, head: consuming sending Head, writer: AuditWriterFields,
         onFailure: @escaping @Sendable (AuditError) -> Void) {
        self.directory = directory
        self.writer = writer
        self.key = key
        self.paths = paths
        self.volumeID = volumeID
        self.host = Self.hostName()
        self.constants = AuditRecordConstants(volumeID: volumeID, host: host, writer: writer)
        self.checkpoints = checkpoints
        self.anchor = anchor
        self.anchorInterval = anchorInterval
        self.anchorState = anchorState
        self.gap = gap
        self.segmentLimit = segmentLimit
        self.lock = lock
        self.head = Mutex(head)
        self.onFailure = onFailure
    }


    /// Opens (creating if needed) the log in `directory` and continues its chain from the last
    /// complete record. Waits up to `lockWait` seconds for another writer to finish.
    public static func open(directory: String, key: SecretBytes, volumeID: String,
                            checkpoints: (any AuditCheckpointStore)?, anchor: (any AuditAnchorStore)? = nil,
                            anchorInterval: Double = defaultAnchorInterval, segmentLimit: Int = defaultSegmentLimit,
                            lockWait: Double = 10, mountpoint: String? = nil,
                            onFailure: @escaping @Sendable (AuditError) -> Void = { _ in }) throws(AuditError) -> AuditLog {
        do { try Descriptor.cwd.mkdir(directory, mode: 0o700) } catch {
            if error.errno != .EEXIST { throw .system(error) }
        }
        let lockPath = directory + "/writer.lock"
        let lock: FileDescriptor
        do { lock = try FileDescriptor.open(lockPath, O_RDWR | O_CREAT | O_CLOEXEC, mode: 0o600) } catch { throw .system(error) }
        guard (try? lock.descriptor.lock(LOCK_EX, waitingUpTo: lockWait, poll: 0.02)) == true else {
            throw AuditError(.busy, "another process is writing the audit log in \(directory)",
                             hint: "if the volume is mounted, the mount writes its records; else retry when the other command ends")
        }
        var head = Head()
        let found: Continuity
        do {
            try resume(&head, directory: directory)
            found = continuity(&head, key: key, checkpoints: checkpoints, anchor: anchor)
        }
        let paths: AuditPathSeal
        do {
            paths = try AuditPathSeal(auditKey: key)
            head.mac = try HMACSHA256.Keyed(key: key)
        } catch {
            throw AuditError(.key, "cannot derive the audit path key or the record MAC context: \(error)")
        }
        // Record ids are SESSION-SEQ: unique across volumes and hosts, and across a log rolled
        // back without an anchor (its seqs come again, under another session), at no cost per record.
        let session: [UInt8]
        do { session = try SecureRandom.bytes(16) } catch { throw AuditError(.key, "cannot draw the writer's session id: \(error)") }
        let log = AuditLog(directory: directory, key: key, paths: paths, volumeID: volumeID, checkpoints: checkpoints,
                           anchor: anchor, anchorInterval: anchorInterval, anchorState: found.anchorState, gap: found.gap,
                           segmentLimit: segmentLimit, lock: lock, head: head,
                           writer: AuditWriterFields(session: hexString(session), mountpoint: mountpoint), onFailure: onFailure)
        if let gap = found.gap {
            // Chained at once, durably, before anything else can be appended: the hole stays
            // visible to `audit verify` for as long as the log exists.
            try log.append(AuditEvent(AuditGap.event, result: "error", detail: gap), durable: true)
        }
        return log
    }

    /// What `continuity` found: the gap to record (nil: the log reaches its last known head) and
    /// the anchor's state in words.
    struct Continuity { var gap: String?; var anchorState: String }

    /// Checks the log found on disk against the last checkpoint (meta.db) and the anchor (the
    /// key provider), whichever is further. A log that ends before it, or holds another record at
    /// its seq, had records removed: the chain then continues from the known head (seq and MAC),
    /// never from what was found, so the hole is in the chain itself, and a gap is returned.
    static func continuity(_ head: inout Head, key: SecretBytes, checkpoints: (any AuditCheckpointStore)?,
                           anchor: (any AuditAnchorStore)?) -> Continuity {
        var known: [(what: String, cp: AuditCheckpoint)] = []
        var problems: [String] = []
        if let bytes = try? checkpoints?.loadCheckpoint() {
            do { known.append(("the checkpoint in meta.db", try AuditCheckpoint.decode(bytes, key: key))) } catch {
                problems.append("the checkpoint in meta.db does not verify (altered): \(error.message)")
            }
        }
        var anchorState = "not anchored (the key provider keeps no anchor)"
        if let anchor {
            do {
                if let bytes = try anchor.loadAnchor() {
                    do {
                        let cp = try AuditCheckpoint.decode(bytes, key: key)
                        known.append(("the anchor in \(anchor.place)", cp))
                        anchorState = "anchored in \(anchor.place) at seq \(cp.count)"
                    } catch {
                        problems.append("the anchor in \(anchor.place) does not verify under the audit key (altered or another volume's)")
                        anchorState = "the anchor in \(anchor.place) does not verify"
                    }
                } else {
                    anchorState = "no anchor in \(anchor.place) yet"
                }
            } catch {
                anchorState = "cannot read the anchor in \(anchor.place): \(error)"
            }
        }
        guard let best = known.max(by: { $0.cp.count < $1.cp.count }) else {
            return Continuity(gap: problems.isEmpty ? nil : problems.joined(separator: "; "), anchorState: anchorState)
        }
        let found = head.seq
        var gap: String?
        if best.cp.count > found {
            gap = "the log ended at seq \(found) but \(best.what) of \(best.cp.time) records seq \(best.cp.count): "
                + "records \(found + 1)…\(best.cp.count) are missing (cut off, segments deleted, or audit/ replaced); "
                + "the chain continues from seq \(best.cp.count)"
        } else if best.cp.count == found && best.cp.head != head.prev {
            gap = "record seq \(found) is not the one \(best.what) of \(best.cp.time) names (the log was replaced); "
                + "the chain continues from the anchored record"
        }
        if gap != nil {
            head.seq = best.cp.count
            head.prev = best.cp.head
            // A new segment for the continued chain: never append after the records found.
            head.setFile(nil)
        }
        let all = (gap.map { [$0] } ?? []) + problems
        return Continuity(gap: all.isEmpty ? nil : all.joined(separator: "; "), anchorState: anchorState)
    }

    /// Reads the last complete record of the newest segment. A segment that does not end with a
    /// newline (a torn record after a crash or a full disk) is left as it is: the next record
    /// starts a new segment, so the torn bytes stay a torn tail and never sit inside a segment.
    static func resume(_ head: inout Head, directory: String) throws(AuditError) {
        let segments = AuditSegments.list(directory)
        guard let last = segments.last else { return }
        let (tail, endsWithNewline) = try AuditSegments.lastRecord(in: last.path)
        if let tail {
            guard let split = AuditRecord.split(tail[...]), let chain = AuditRecord.chainFields(split.body) else {
                throw AuditError(.malformed, "the last record of \(last.path) is not a record",
                                 hint: "run cmkfs audit verify on the volume; move the damaged segment aside to continue")
            }
            head.seq = chain.seq
            head.prev = split.mac
        } else if last.firstSeq > 1 {
            // A segment with no complete record: continue from the previous segment's tail.
            let earlier = segments.dropLast()
            if let previous = earlier.last, let (t, _) = try? AuditSegments.lastRecord(in: previous.path),
               let t, let split = AuditRecord.split(t[...]), let chain = AuditRecord.chainFields(split.body) {
                head.seq = chain.seq
                head.prev = split.mac
            }
        }
        if endsWithNewline && tail != nil {
            let file: FileDescriptor
            do { file = try FileDescriptor.open(last.path, O_WRONLY | O_APPEND | O_CLOEXEC) } catch { throw .system(error) }
            head.bytes = Int((try? file.descriptor.fstat())?.st_size ?? 0)
            head.setFile(file)
            head.path = last.path
            reserve(&head)
        }
    }

    /// Extends the reservation ahead of the segment's end; a full disk just leaves what is left.
    static func reserve(_ h: inout Head) {
        guard let fd = h.fd, (try? fd.fallocate(mode: Descriptor.keepSize, offset: h.bytes, length: reserveBytes)) != nil else { return }
        h.reserved = h.bytes + reserveBytes
    }

    /// Writes one record (before returning) and, when `durable`, fsyncs it and saves a
    /// checkpoint. Throws when the record could not be written: the caller must not use the key.
    public func append(_ event: AuditEvent, durable: Bool = false) throws(AuditError) {
        _ = try appendLine(event, durable: durable)
    }

    /// `append`, returning the line written (its newline included: the bytes written, not a
    /// copy), for a copy of the record elsewhere (`AuditFanOut`).
    public func appendLine(_ event: AuditEvent, durable: Bool = false) throws(AuditError) -> [UInt8] {
        var sealed: String?
        if let path = event.path {
            // Sealed before the lock: the head is held for one write(2) only.
            do { sealed = try paths.seal(path) } catch { throw AuditError(.key, "cannot seal an audit record's path: \(error)") }
        }
        // Everything but seq, time and prev, also before the lock.
        let prepared = AuditRecord.prepare(event, path: sealed, constants)
        let (seq, written) = try head.withLock { (h: inout Head) throws(AuditError) -> (UInt64, [UInt8]) in
            guard !h.closed else { throw AuditError(.io, "the audit log is closed") }
            let seq = h.seq + 1
            let record: (line: [UInt8], mac: String)
            do {
                record = try AuditRecord.line(seq: seq, time: AuditRecord.clock(), prev: h.prev, prepared, mac: h.mac, key: key)
            } catch {
                throw AuditError(.key, "cannot MAC an audit record: \(error)")
            }
            if h.fd == nil || (h.bytes > 0 && h.bytes + record.line.count > segmentLimit) {
                do throws(AuditError) { try roll(&h, firstSeq: seq) } catch {
                    // No room for a new segment: keep writing into the reserve of this one.
                    guard h.fd != nil && error.kind == .full else { throw error }
                }
            }
            let (written, code) = Self.writeAll(h.fd!, record.line)
            guard written == record.line.count else {
                if written > 0 {
                    // A torn record: leave this segment (append-only: it cannot be cut back) so
                    // the torn bytes stay its tail; the next record opens a new segment.
                    try? h.fd?.fsync()
                    h.setFile(nil)
                }
                throw .system("write", h.path, code.rawValue)
            }
            h.seq = seq
            h.prev = record.mac
            h.bytes += record.line.count
            h.unsynced = true
            if h.reserved - h.bytes < Self.reserveBytes / 4 { Self.reserve(&h) }
            return (seq, record.line)
        }
        Metrics.shared.auditRecords.add()
        if durable {
            // The anchor follows within one group-commit interval, off the caller's path: a
            // `key revoke` never waits for a provider round trip (or a provider timeout) here.
            anchored.withLock { $0.requested = max($0.requested, seq) }
            try sync(anchor: .never, covering: seq)
        }
        return written
    }

    /// Makes every record written so far durable and saves a checkpoint of the head (sharing a
    /// sync with concurrent durable appends).
    public func sync() throws(AuditError) { try sync(anchor: .never, covering: count) }

    /// `sync`, then the anchor: `.now` (close), or `.ifDue` (the group commit: when a durable
    /// record asked for it or `anchorInterval` has passed). An anchor that cannot be written is
    /// reported through `onFailure`, never thrown: the records are safe in the log, and the next
    /// interval tries again.
    ///
    /// Group commit: `covering` is the seq a durable append waits for. One such append at a
    /// time leads: it fsyncs (and checkpoints) every record written so far, its own and those
    /// appended while the sync before it ran. The others wait for it without holding any lock
    /// (so appenders whose records it covered return, and write again, while it syncs), and
    /// return once a completed sync covers their record, or lead the next one. So concurrent
    /// durable appends share one fsync and one checkpoint per batch, and none returns before an
    /// fsync and a checkpoint that cover its record have completed.
    func sync(anchor mode: AnchorMode, covering target: UInt64? = nil) throws(AuditError) {
        let leads = target.map { commit.lead(until: $0) } ?? false
        if target != nil && !leads { return }
        var reached: UInt64 = 0
        // Wakes the followers, and whoever leads next, whether this sync worked or not.
        defer { if leads || reached > 0 { commit.finish(leader: leads, durable: reached) } }
        let head = try syncing.withLock { (synced: inout Synced) throws(AuditError) -> (seq: UInt64, checkpoint: [UInt8]) in
            // A duplicate, so the fsync runs outside the head's lock while a roll may close the segment.
            let (duplicate, seq, prev, path) = self.head.withLock { h -> (Result<Int32, SystemError>?, UInt64, String, String) in
                let copy: Result<Int32, SystemError>? = h.unsynced ? h.fd.map { fd in Result { () throws(SystemError) in try fd.duplicate().release() } } : nil
                h.unsynced = false
                return (copy, h.seq, h.prev, h.path)
            }
            if let duplicate {
                do throws(SystemError) {
                    let file = FileDescriptor(adopting: try duplicate.get())
                    synced.fsyncs += 1
                    let started = Metrics.now()
                    try file.descriptor.fsync()
                    Metrics.shared.auditFsync.observe(since: started)
                } catch {
                    self.head.withLock { $0.unsynced = true }
                    throw .system("fsync", path, error.errno.rawValue)
                }
            }
            let cp: [UInt8]
            do { cp = try AuditCheckpoint(count: seq, head: prev, time: AuditRecord.now()).encoded(key: key) } catch {
                throw AuditError(.key, "cannot MAC the audit checkpoint: \(error)")
            }
            if seq > synced.checkpointed, let checkpoints {
                do { try checkpoints.saveCheckpoint(cp) } catch {
                    throw AuditError(.io, "cannot save the audit checkpoint: \(error)")
                }
                synced.checkpointed = seq
            }
            return (seq, cp)
        }
        reached = head.seq
        guard mode != .never, let anchor, head.seq > 0 else { return }
        anchoring.withLock { _ in
            let now = Self.monotonicSeconds()
            let due = anchored.withLock { a in
                head.seq > a.seq && (mode == .now || a.requested > a.seq || now - a.at >= anchorInterval)
            }
            guard due else { return }
            do {
                try anchor.saveAnchor(head.checkpoint, seq: head.seq)
                // Requests above head.seq (records appended since its sync) stay due.
                anchored.withLock { $0.seq = head.seq; $0.at = now }
            } catch {
                // Retried at the next interval, not at every 100 ms group commit.
                anchored.withLock { $0.at = now; $0.requested = 0 }
                onFailure(AuditError(.io, "cannot move the audit anchor in \(anchor.place) to seq \(head.seq): \(error)"))
            }
        }
    }

    static func monotonicSeconds() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    /// Syncs every `interval` seconds while records are pending (group commit), and gives the
    /// checkpoint store its tick (`AuditCheckpointStore.groupCommitTick`), until `close`.
    public func startGroupCommit(every interval: Double) {
        Thread.detachNewThread { [self] in
            // Said once per new reason, not every interval (a full disk fails every tick).
            var tickFailure: String?
            while !head.withLock({ $0.closed }) {
                Thread.sleep(forTimeInterval: interval)
                do throws(AuditError) { try sync(anchor: .ifDue) } catch { onFailure(error) }
                do {
                    try checkpoints?.groupCommitTick()
                    tickFailure = nil
                } catch {
                    let reason = "\(error)"
                    if reason != tickFailure { onFailure(AuditError(.io, "cannot checkpoint the metadata database: \(reason)")) }
                    tickFailure = reason
                }
            }
        }
    }

    /// Syncs, closes the segment and releases the writer lock.
    public func close() throws(AuditError) {
        defer {
            head.withLock { h in
                h.closed = true
                h.setFile(nil)
            }
            try? lock.descriptor.lock(LOCK_UN)
        }
        try sync(anchor: .now)
    }

    /// The last record's seq (records written so far, with the records before this writer).
    public var count: UInt64 { head.withLock { $0.seq } }

    /// How many times a sync fsynced the log (for tests: fsyncs per durable record).
    var fsyncCount: Int { syncing.withLock { $0.fsyncs } }

    /// What became of `chattr +a` on the current segment ("set", or why not).
    public var appendOnlyState: String { head.withLock { $0.appendOnly } }

    /// Starts a new segment whose first record will be `firstSeq`.
    /// The old segment stays open until the new one exists, so a full disk (no room for a new
    /// file) leaves the caller the old segment and its reserve.
    private func roll(_ h: inout Head, firstSeq: UInt64) throws(AuditError) {
        if let fd = h.fd {
            do { try fd.fsync() } catch { throw .system("fsync", h.path, error.errno.rawValue) }
        }
        var attempt = 0
        var path = AuditSegments.name(directory, firstSeq: firstSeq, attempt: 0)
        var file: FileDescriptor
        while true {
            do { file = try FileDescriptor.open(path, O_WRONLY | O_APPEND | O_CREAT | O_EXCL | O_CLOEXEC, mode: 0o600); break } catch {
                guard error.errno == .EEXIST, attempt < 1000 else { throw .system(error) }
            }
            attempt += 1
            path = AuditSegments.name(directory, firstSeq: firstSeq, attempt: attempt)
        }
        do { try file.descriptor.setAppendOnly(); h.appendOnly = "set" } catch { h.appendOnly = "not set: \(error.errno)" }
        if let dir = try? FileDescriptor.open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC) { try? dir.descriptor.fsync() }
        h.setFile(file)
        h.path = path
        h.bytes = 0
        h.reserved = 0
        Self.reserve(&h)
    }

    /// write(2) until all of `bytes` is written; the count written and, when short, why.
    static func writeAll(_ fd: Descriptor, _ bytes: [UInt8]) -> (Int, Errno) {
        bytes.withUnsafeBytes { buffer in
            var done = 0
            while done < buffer.count {
                do throws(SystemError) {
                    let n = try fd.write(UnsafeRawBufferPointer(rebasing: buffer[done...]))
                    if n == 0 { return (done, .EIO) }
                    done += n
                } catch { return (done, error.errno) }
            }
            return (done, .EIO)
        }
    }

    static func hostName() -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        guard gethostname(&buffer, buffer.count - 1) == 0 else { return "unknown" }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

/// The segment files of a log directory, in chain order.
public enum AuditSegments {
    public struct Segment: Sendable, Equatable {
        public let path: String
        public let firstSeq: UInt64
        public let attempt: Int
    }

    /// `audit-<first seq, 12 digits>.log`, or `audit-<first seq>.<attempt>.log` when a segment
    /// of that name already holds a torn record.
    static func name(_ directory: String, firstSeq: UInt64, attempt: Int) -> String {
        let digits = String(firstSeq)
        let padded = String(repeating: "0", count: max(0, 12 - digits.count)) + digits
        return directory + "/audit-" + padded + (attempt == 0 ? "" : ".\(attempt)") + ".log"
    }

    /// The segments in `directory`, ordered by first seq then attempt.
    public static func list(_ directory: String) -> [Segment] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return names.compactMap { parse(directory + "/" + $0) }.sorted { ($0.firstSeq, $0.attempt) < ($1.firstSeq, $1.attempt) }
    }

    /// A segment from its path, or nil if the name is not a segment's.
    public static func parse(_ path: String) -> Segment? {
        let name = (path as NSString).lastPathComponent
        guard name.hasPrefix("audit-"), name.hasSuffix(".log") else { return nil }
        let parts = name.dropFirst(6).dropLast(4).split(separator: ".", omittingEmptySubsequences: false)
        guard let seq = parts.first.flatMap({ UInt64($0) }), parts.count <= 2 else { return nil }
        let attempt = parts.count == 2 ? Int(parts[1]) : 0
        guard let attempt else { return nil }
        return Segment(path: path, firstSeq: seq, attempt: attempt)
    }

    /// The last complete line of a segment (without its newline) and whether the file ends with
    /// a newline (false: a torn record follows it).
    static func lastRecord(in path: String) throws(AuditError) -> ([UInt8]?, Bool) {
        let file: FileDescriptor
        do { file = try FileDescriptor.open(path, O_RDONLY | O_CLOEXEC) } catch { throw .system(error) }
        let size: Int
        do { size = Int(try file.descriptor.fstat().st_size) } catch { throw .system(error) }
        guard size > 0 else { return (nil, true) }
        let window = min(size, 1 << 20)
        let buffer: [UInt8]
        do { buffer = try file.descriptor.preadFully(count: window, at: size - window) } catch { throw .system("read", path, error.errno.rawValue) }
        guard buffer.count == window else { throw .system("read", path, EIO) }
        let endsWithNewline = buffer.last == 0x0A
        guard let lastNewline = buffer.lastIndex(of: 0x0A) else { return (nil, false) }
        let start = buffer[..<lastNewline].lastIndex(of: 0x0A).map { $0 + 1 } ?? 0
        return (Array(buffer[start..<lastNewline]), endsWithNewline)
    }
}

/// The leader and followers of durable appends (`AuditLog.sync(anchor:covering:)`).
/// Sound as @unchecked Sendable: `durable` and `leading` are read and written only with
/// `condition` locked (NSCondition, because Synchronization's Mutex has no wait/broadcast).
final class GroupCommit: @unchecked Sendable {
    private let condition = NSCondition()
    /// Every record up to this seq is fsynced and checkpointed.
    private var durable: UInt64 = 0
    /// Whether a durable append is syncing for the others now.
    private var leading = false

    /// Waits until a completed sync covers `target` (false: nothing to do) or no one is syncing
    /// for the others (true: the caller leads, and must call `finish(leader: true, …)`).
    func lead(until target: UInt64) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        while true {
            if durable >= target { return false }
            if !leading { leading = true; return true }
            condition.wait()
        }
    }

    /// A sync ended, every record up to `seq` durable (0: it failed); wakes the waiters.
    func finish(leader: Bool, durable seq: UInt64) {
        condition.lock()
        if seq > durable { durable = seq }
        if leader { leading = false }
        condition.broadcast()
        condition.unlock()
    }
}
