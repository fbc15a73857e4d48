import Foundation
import CMKSystem
import Glibc
import CMKKeys

/// One request the KMS answered, as its audit log records it (docs/kms-protocol.md, "The KMS's
/// audit log"): one JSON object a line, fields in this order, absent values `null`.
public struct KMSAuditEntry: Sendable {
    public var time: String
    /// The request id cmkfs sent (`KeyRequest.id`), or `srv-…` made here for a request without one.
    public var requestID: String
    /// The protocol operation: `wrap`, `unwrap`, `create_key`, `create_version`, `state`,
    /// `set_state`, `anchor_get`, `anchor_set`; nil when the request could not be read.
    public var kmsOp: String?
    public var keyID: String?
    public var keyVersion: Int?
    /// Hex.
    public var volumeID: String?
    public var fileID: String?
    /// What the client says it was doing, for whom, where and why (the request context).
    public var operation: String?
    public var uid: UInt32?
    public var pid: Int32?
    public var process: String?
    public var host: String?
    public var reason: String?
    /// The connecting process as the kernel vouches for it (SO_PEERCRED): the mount or command
    /// that sent the request, whatever the context claims.
    public var peerUID: UInt32?
    public var peerPID: Int32?
    /// `ok`, `denied` (key disabled or destroyed, peer not allowed) or `error`.
    public var result: String
    /// The protocol status name (`ok`, `key_disabled`, `unwrap_failed`, …).
    public var status: String
    public var error: String?

    /// The JSON line (without its newline).
    public func line() -> String {
        var out = "{"
        var first = true
        func put(_ key: String, _ raw: String) {
            if !first { out += "," }
            first = false
            out += "\"\(key)\":\(raw)"
        }
        func str(_ key: String, _ value: String?) { put(key, value.map(Self.quote) ?? "null") }
        func num<N: BinaryInteger>(_ key: String, _ value: N?) { put(key, value.map { String($0) } ?? "null") }
        str("time", time)
        str("request_id", requestID)
        str("kms_op", kmsOp)
        str("key", keyID)
        num("key_version", keyVersion)
        str("volume", volumeID)
        str("file", fileID)
        str("operation", operation)
        num("uid", uid)
        num("pid", pid)
        str("process", process)
        str("host", host)
        str("reason", reason)
        num("peer_uid", peerUID)
        num("peer_pid", peerPID)
        str("result", result)
        str("status", status)
        str("error", error)
        return out + "}"
    }

    /// A JSON string: `"` `\` and control characters escaped, the rest as is.
    static func quote(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\t": out += "\\t"
            case "\r": out += "\\r"
            default:
                if u.value < 0x20 || u.value == 0x7F {
                    let h = String(u.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - h.count) + h
                } else {
                    out.unicodeScalars.append(u)
                }
            }
        }
        return out + "\""
    }

    /// UTC with microseconds, as cmkfs' own audit records: `2026-11-24T02:44:21.123456Z`.
    static func now() -> String {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        var t = ts.tv_sec
        var tm = tm()
        gmtime_r(&t, &tm)
        func pad(_ v: Int, _ n: Int) -> String { let s = String(v); return String(repeating: "0", count: max(0, n - s.count)) + s }
        return "\(pad(Int(tm.tm_year) + 1900, 4))-\(pad(Int(tm.tm_mon) + 1, 2))-\(pad(Int(tm.tm_mday), 2))T"
            + "\(pad(Int(tm.tm_hour), 2)):\(pad(Int(tm.tm_min), 2)):\(pad(Int(tm.tm_sec), 2)).\(pad(ts.tv_nsec / 1000, 6))Z"
    }
}

/// The KMS's own record of every request it answers: an append-only file of JSON lines.
///
/// Durability: a request is answered only after its line is written **and fdatasync'd**; the
/// threads answering at the same time share one fdatasync (group commit: the first to need one
/// syncs for all written before it started, the others wait for it). A crash (of the process or
/// the machine) can therefore lose no record of an answered request; it can leave at most the
/// last line torn, or lines of requests whose answers were never sent. If the line cannot be
/// written or synced (disk full, I/O error), the request is refused (`unavailable`): no key use
/// goes unrecorded.
public final class KMSAuditLog: @unchecked Sendable {
    // Sound: `file` is immutable; `written`, `synced` and `syncing` are read and changed only with
    // `condition` locked; the write(2) itself is made under the lock so lines never interleave.
    public let path: String
    private let file: FileDescriptor
    private let condition = NSCondition()
    private var written: UInt64 = 0
    private var synced: UInt64 = 0
    private var syncing = false

    public struct OpenError: Error, CustomStringConvertible {
        public let description: String
    }

    /// Opens (creating, mode 0600) `path` for appending. A torn last line (a crash mid-write) is
    /// ended with a newline first, so the next record starts a line of its own.
    public init(path: String) throws(OpenError) {
        self.path = path
        let dir = (path as NSString).deletingLastPathComponent
        if !dir.isEmpty { try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700]) }
        do { file = try FileDescriptor.open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, mode: 0o600) } catch {
            throw OpenError(description: "cannot open the audit log \(path): \(error.errno)")
        }
        if let size = try? file.descriptor.fstat().st_size, size > 0 {
            var last: UInt8 = 0x0A
            if let reader = try? FileDescriptor.open(path, O_RDONLY | O_CLOEXEC) {
                _ = try? withUnsafeMutableBytes(of: &last) { try reader.descriptor.pread(into: $0, at: Int(size) - 1) }
            }
            if last != 0x0A { try? file.descriptor.writeAll([0x0A]) }
        }
    }

    /// Appends `entry` and returns once it is durable, or throws the errno that stopped it.
    public func record(_ entry: KMSAuditEntry) throws(OpenError) {
        let bytes = Array((entry.line() + "\n").utf8)
        condition.lock()
        defer { condition.unlock() }
        do { try file.descriptor.writeAll(bytes) } catch {
            throw OpenError(description: "cannot write the audit log \(path): \(error.errno)")
        }
        written += 1
        let mine = written
        while synced < mine {
            if syncing {
                condition.wait()
                continue
            }
            syncing = true
            let target = written
            condition.unlock()
            let failure: SystemError?
            do { try file.descriptor.fdatasync(); failure = nil } catch { failure = error }
            condition.lock()
            syncing = false
            if failure == nil { synced = max(synced, target) }
            condition.broadcast()
            if let failure { throw OpenError(description: "cannot sync the audit log \(path): \(failure.errno)") }
        }
    }
}
