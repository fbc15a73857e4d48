import Dispatch
import Logging
import Synchronization
import Glibc
import CFuse3
import CMKAudit
import CMKFormat
import CMKKeyService
import CMKKeys
import CMKMetrics
import CMKSystem
import CMKVolume

/// How an open, create or truncate used a file's DEK, for its audit record.
struct KeyUse {
    /// The event the use is recorded as (`open`, `create`, …): the operation a key request names.
    var operation = "open"
    /// The FUSE request's caller, whom a key request names (nil: not known here).
    var caller: FileSystem.Caller?
    var fileID: FileID?
    var key: KeyRef?
    /// `hit`, `miss` (unwrapped by the provider) or `new` (generated and wrapped).
    var cache = "hit"
    /// Why the key could not be had (the provider's message), for a denial's record.
    var error: String?
    /// The key-provider request this use made (a miss or a new key), whose id the record carries.
    var request: KeyRequest?

    init(_ operation: String, caller: FileSystem.Caller?) {
        self.operation = operation
        self.caller = caller
    }

    init(fileID: FileID?, key: KeyRef?) {
        self.fileID = fileID
        self.key = key
    }
}

extension KeyUse {
    /// The key request this use makes when it calls the provider: who (the FUSE caller), what
    /// for (the use's event) and the mount's `--kms-reason`.
    func keyRequest(processNames: ProcessNames, reason: String?) -> KeyRequest {
        KeyRequest(operation: operation, uid: caller.map { UInt32($0.uid) }, pid: caller.map { Int32($0.pid) },
                   process: caller.flatMap { processNames.name(of: pid_t($0.pid)) }, reason: reason)
    }
}

/// Process names and login uids for audit records, remembered for a second: `find -exec cat {} +`
/// opens thousands of files from one process, and reading `/proc/PID/comm` and
/// `/proc/PID/loginuid` for each open cost three system calls each (~3 % of the daemon's time
/// reading a tree for the name alone). A pid is not reused within a second (the kernel hands
/// out pids in order up to pid_max); a process that renames itself (prctl PR_SET_NAME) is
/// recorded under its old name for at most that second (a login uid is set once per session).
final class ProcessNames: Sendable {
    struct Identity: Equatable { let name: String?; let loginUID: UInt32? }
    private struct Entry { let identity: Identity; let at: UInt64 }
    private let entries = Mutex<[pid_t: Entry]>([:])
    static let lifetimeNanoseconds: UInt64 = 1_000_000_000

    func name(of pid: pid_t) -> String? { identity(of: pid).name }

    func identity(of pid: pid_t) -> Identity {
        let now = DispatchTime.now().uptimeNanoseconds
        if let hit = entries.withLock({ $0[pid] }), now - hit.at < Self.lifetimeNanoseconds { return hit.identity }
        let identity = Identity(name: processName(pid), loginUID: processLoginUID(pid))
        entries.withLock { table in
            if table.count >= 4096 { table.removeAll(keepingCapacity: true) }
            table[pid] = Entry(identity: identity, at: now)
        }
        return identity
    }
}

/// The audit side of the frontend: one record per DEK use (open, create, truncate), written
/// before the reply; denials on the read and write paths. Nothing here runs on a successful read
/// or write.
extension FileSystem {
    /// Records a successful key use before its reply. Throws `.audit` when the record could not
    /// be written: the caller undoes the use and answers that (fail closed).
    func audit(_ event: String, _ use: KeyUse, path: @autoclosure () -> String?, caller: Caller?, detail: String? = nil) throws(FSError) {
        guard let error = record(event, use, rc: 0, error: nil, path: path, caller: caller, detail: detail) else { return }
        let refusal = FSError.audit(error)
        Self.logger.error("audit: cannot record \(event) of \(path() ?? "?"): \(error); refusing it (errno \(refusal.errno))")
        throw refusal
    }

    /// Records a key use that failed with `failure` (a denial when its errno is EACCES); `error`
    /// replaces the use's own message in the record.
    func audit(_ event: String, _ use: KeyUse, failure: FSError, error: String? = nil, path: @autoclosure () -> String?,
               caller: Caller?, detail: String? = nil) {
        guard let unwritten = record(event, use, rc: failure.errno, error: error, path: path, caller: caller, detail: detail) else { return }
        Self.logger.error("audit: cannot record \(event) of \(path() ?? "?"): \(unwritten); it failed anyway")
    }

    /// Appends the record; the log's error when it could not be written.
    private func record(_ event: String, _ use: KeyUse, rc: Int32, error: String?, path: () -> String?,
                        caller: Caller?, detail: String?) -> AuditError? {
        if rc != 0 { Metrics.shared.denials.add(rc) }
        guard let log = audit else { return nil }
        let result = rc == 0 ? "ok" : (rc == EACCES ? "denied" : "error")
        let who = caller.map { processNames.identity(of: pid_t($0.pid)) }
        var record = AuditEvent(event, result: result, errno: rc == 0 ? nil : rc, error: error ?? use.error,
                                fileID: use.fileID?.description, path: path(), keyID: use.key?.keyID,
                                keyVersion: use.key?.version, cache: use.fileID == nil ? nil : use.cache,
                                uid: caller.map { Int($0.uid) }, gid: caller.map { Int($0.gid) },
                                pid: caller.map { Int($0.pid) }, process: who?.name,
                                detail: detail, kmsRequest: use.request?.id,
                                kmsServerRequest: use.request?.receipt.serverRequestID)
        record.name(loginUID: who?.loginUID)
        do {
            try log.append(record)
            return nil
        } catch { return error }
    }

    /// The key request a use makes when it calls the provider: who (the FUSE caller), what for
    /// (the use's event) and the mount's `--kms-reason`.
    func keyRequest(for use: KeyUse) -> KeyRequest {
        use.keyRequest(processNames: processNames, reason: volume.kmsReason)
    }

    /// A key-service event (renew, flush, expire) as an audit record, written by the group
    /// commit (a flush requested through the control socket is synced before the reply).
    static func auditKeyEvent(_ log: (any AuditSink)?, _ event: KeyCacheEvent) {
        guard let log else { return }
        do { try log.append(AuditEvent(event.auditName, result: event.auditResult, detail: event.message)) } catch {
            log_(error, event.message)
        }
    }

    private static func log_(_ error: AuditError, _ text: String) {
        logger.error("audit: cannot record key event '\(text)': \(error)")
    }

    /// The path inside the mount of an open backing descriptor (`/proc/self/fd/N`), or nil.
    func mountPath(ofDescriptor fd: Int32) -> String? {
        guard let bytes = try? Descriptor.cwd.readlink("/proc/self/fd/\(fd)", capacity: Int(PATH_MAX) + 1), !bytes.isEmpty else { return nil }
        let target = String(decoding: bytes, as: UTF8.self)
        let root = volume.dataPath
        if target == root { return "/" }
        // Outside the data directory: no path is better than a wrong one in the record.
        guard target.hasPrefix(root + "/") else { return nil }
        let relative = String(target.dropFirst(root.count + 1))
        guard let names else { return "/" + relative }
        // Encrypted names: each component decrypted; directories come from a cache, so an open
        // costs one readlink and one decryption, not a walk.
        return names.mountPath(ofBacking: relative)
    }

    /// The path inside the mount of `node`, for its audit records: joined from the names its
    /// lookups noted (no system call, no decryption), else read from its descriptor and noted
    /// for the next open (AuditNames.swift).
    func mountPath(_ node: Node) -> String? {
        let generation = auditNames.current
        if let path = auditNames.path(of: node.inode, at: generation) { return path }
        guard let path = mountPath(ofDescriptor: node.fd) else { return nil }
        auditNames.note(node.inode, path: path, at: generation)
        return path
    }

    /// Notes for the audit records of `e`'s inode that it was reached through `name` in `dir`
    /// (a lookup, or a readdirplus entry, that began at `generation`).
    func noteAuditName(_ e: fuse_entry_param, in dir: Node, _ name: String, at generation: UInt64) {
        guard e.ino != 0, let inode = inodes.get(e.ino) else { return }
        auditNames.noteLookup(inode, parent: dir.inode, name: name, links: UInt(e.attr.st_nlink), at: generation)
    }

    /// `make` (a create, mkdir, mknod or symlink of `name` in `dir`) with the new entry's name
    /// noted for its audit records, as a lookup notes it: the kernel uses a new entry without a
    /// LOOKUP, and its first opens would otherwise find their path the slow way (a readlink and
    /// a name decryption), which yields no path while a `cache flush` has dropped the name key.
    func noting<T>(_ dir: Node, _ name: String, entry: (T) -> fuse_entry_param,
                   _ make: () throws(FSError) -> T) throws(FSError) -> T {
        let generation = auditNames.current
        let made = try make()
        noteAuditName(entry(made), in: dir, name, at: generation)
        return made
    }

    /// `dir`'s path inside the mount joined with `name`.
    func mountPath(_ dir: Node, _ name: String) -> String {
        let base = mountPath(dir) ?? "?"
        return base == "/" ? "/" + name : base + "/" + name
    }
}
