import Logging
import Foundation
import Synchronization
import CMKAudit
import CMKKeyService
import CMKKeys
import CMKSocketKMS
import CMKVolume

/// Serves the control socket of a live mount: one thread accepts, each connection is served on
/// a thread of its own (see `ControlRequest`), so an idle or slow client never delays a flush.
enum ControlServer {
    /// Connections served at once; one more is answered "busy" and closed at once, so a flood
    /// of idle clients costs threads up to this bound and never blocks the accept loop.
    static let maxConnections = 32
    /// A connection must deliver its request line within this long (in total, not per read).
    static let requestTimeoutMilliseconds = 5000
    /// Connections being served now (one control server per process).
    private static let active = Atomic<Int>(0)

    /// Binds `VOLUME/control.sock` and serves it until the process ends.
    static func start(_ fs: FileSystem) throws(CMKError) {
        let path = fs.volume.path + "/control.sock"
        unlink(path)
        let fd: Int32
        do { fd = try UnixSocket.listen(path, backlog: 64) } catch {
            throw CMKError(.mountFailed, "cannot listen on the control socket: \(error)",
                           hint: path.utf8.count > UnixSocket.maxPathBytes ? "use a shorter volume path" : nil)
        }
        var st = stat()
        let owner = stat(fs.volume.path, &st) == 0 ? st.st_uid : 0
        Thread.detachNewThread {
            while true {
                let client = accept(fd, nil, nil)
                if client < 0 { if errno == EINTR { continue }; usleep(10_000); continue }
                guard Self.active.add(1, ordering: .sequentiallyConsistent).newValue <= maxConnections else {
                    Self.active.subtract(1, ordering: .sequentiallyConsistent)
                    UnixSocket.setTimeouts(client, milliseconds: 100)
                    reply(client, ControlResponse(ok: false, error: "busy: \(maxConnections) control connections are open; try again"))
                    close(client)
                    continue
                }
                Thread.detachNewThread {
                    serve(client, fs, owner: owner)
                    close(client)
                    Self.active.subtract(1, ordering: .sequentiallyConsistent)
                }
            }
        }
    }

    private static func serve(_ client: Int32, _ fs: FileSystem, owner: uid_t) {
        UnixSocket.setTimeouts(client, milliseconds: requestTimeoutMilliseconds)
        guard let cred = UnixSocket.peerCredentials(client).map(PeerCredentials.init), cred.uid == 0 || cred.uid == owner else {
            reply(client, ControlResponse(ok: false, error: "permission denied: only root or the volume's owner may control the mount"))
            return
        }
        guard let line = readLine(client, deadline: monotonicNow() + Double(requestTimeoutMilliseconds) / 1000),
              let request = try? JSONDecoder().decode(ControlRequest.self, from: line) else {
            reply(client, ControlResponse(ok: false, error: "malformed request"))
            return
        }
        reply(client, handle(request, fs, peer: cred))
    }

    static func handle(_ request: ControlRequest, _ fs: FileSystem, peer: PeerCredentials) -> ControlResponse {
        FileSystem.logger.debug("control: \(request.op) from uid \(peer.uid) pid \(peer.pid)")
        // The kill switch first: nothing that can wait (the batched deletes below, an audit sync)
        // runs before the keys are gone.
        if request.op == "flush" || request.op == "flush-key" { return flush(request, fs, peer: peer) }
        // Whatever the command does next may read the key rows: they must not list unlinked files.
        fs.forgets.flush()
        switch request.op {
        case "stats":
            var response = ControlResponse(ok: true)
            response.stats = fs.cache.stats()
            response.openFiles = fs.openFileCount
            return response
        case "relabel":
            // After a rotation: cached DEKs follow their EDEK to the version that wraps it now.
            let active: KeyRef
            do { active = try fs.volume.reloadActiveKey() ?? fs.volume.activeKey } catch {
                return ControlResponse(ok: false, error: "cannot read the active key version: \(error)")
            }
            var response = ControlResponse(ok: true)
            response.flushed = fs.cache.relabel(active: active) { id in
                // The name key's lease follows its own wrap, like a DEK's.
                id == Volume.nameKeyFileID ? (try? fs.volume.nameKeyVersion()) ?? nil
                    : (try? fs.volume.metadata.fileKey(fileId: id))??.keyVersion
            }
            return response
        case "rekey":
            guard let path = request.path else { return ControlResponse(ok: false, error: "rekey needs path") }
            let (rc, message) = fs.rekey(relativePath: path, requester: (peer.uid, peer.gid, peer.pid))
            var response = ControlResponse(ok: rc == 0, error: message)
            response.errno = rc == 0 ? nil : rc
            return response
        case "audit":
            guard let event = request.event, let log = fs.audit else {
                return ControlResponse(ok: fs.audit == nil, error: fs.audit == nil ? nil : "audit needs event")
            }
            do {
                try log.append(AuditEvent(event, result: request.result ?? "ok", error: request.error, fileID: request.fileID,
                                          path: request.path, keyID: request.keyID, keyVersion: request.version,
                                          uid: Int(peer.uid), gid: Int(peer.gid), pid: Int(peer.pid),
                                          process: processName(peer.pid), detail: request.reason),
                               durable: request.durable ?? true)
                return ControlResponse(ok: true)
            } catch {
                return ControlResponse(ok: false, error: "the audit record could not be written: \(error)")
            }
        default:
            return ControlResponse(ok: false, error: "unknown op '\(request.op)'")
        }
    }

    /// One request line, or nil when the peer closes, sends too much, or is not done by `deadline`
    /// (a client trickling one byte at a time cannot hold its thread longer than that).
    /// Drops the keys, cuts open files, then lets the deferred deletions and the audit record
    /// catch up before answering.
    private static func flush(_ request: ControlRequest, _ fs: FileSystem, peer: PeerCredentials) -> ControlResponse {
        if request.op == "flush-key" && request.keyID == nil {
            return ControlResponse(ok: false, error: "flush-key needs key_id")
        }
        let start = monotonicNow()
        let why = (request.reason.map { "\($0); " } ?? "") + "requested by uid \(peer.uid) pid \(peer.pid)"
        let (flushed, cut) = fs.flushKeys(keyID: request.op == "flush" ? nil : request.keyID, version: request.version, reason: why)
        var response = ControlResponse(ok: true)
        response.flushed = flushed
        response.openFilesCut = cut
        response.elapsedMilliseconds = (monotonicNow() - start) * 1000
        // The command may count key rows next: they must not list unlinked files.
        fs.forgets.flush()
        // The flush's audit record is durable before the command hears of it.
        do { try fs.audit?.sync() } catch {
            return ControlResponse(ok: false, error: "flushed, but the audit record could not be made durable: \(error)")
        }
        return response
    }

    private static func readLine(_ fd: Int32, deadline: Double) -> Data? {
        var data = Data()
        var byte: UInt8 = 0
        while data.count < 65536 {
            let left = Int32((deadline - monotonicNow()) * 1000)
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard left > 0, poll(&p, 1, left) == 1 else { return nil }
            let n = read(fd, &byte, 1)
            if n <= 0 { return data.isEmpty ? nil : data }
            if byte == 0x0A { return data }
            data.append(byte)
        }
        return nil
    }

    private static func reply(_ fd: Int32, _ response: ControlResponse) {
        guard var data = try? JSONEncoder().encode(response) else { return }
        data.append(0x0A)
        data.withUnsafeBytes { raw in
            var done = 0
            while done < raw.count {
                let n = write(fd, raw.baseAddress! + done, raw.count - done)
                if n <= 0 { return }
                done += n
            }
        }
    }
}

/// Who is on the other end of a control connection (SO_PEERCRED).
struct PeerCredentials {
    var pid: Int32
    var uid: UInt32
    var gid: UInt32
}
