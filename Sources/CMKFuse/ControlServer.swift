import Foundation
import CMKAudit
import CMKKeyService
import CMKVolume

/// Serves the control socket of a live mount on a thread of its own (see `ControlRequest`).
enum ControlServer {
    /// Binds `VOLUME/control.sock` and serves it until the process ends.
    static func start(_ fs: FileSystem) throws(CMKError) {
        let path = fs.volume.path + "/control.sock"
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw CMKError(.mountFailed, "cannot create the control socket: \(String(cString: strerror(errno)))") }
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        unlink(path)
        var addr = sockaddr_un()
        guard fillAddress(&addr, path) else {
            close(fd)
            throw CMKError(.mountFailed, "the control socket path \(path) is longer than 107 bytes", hint: "use a shorter volume path")
        }
        let bound = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard bound == 0, chmod(path, 0o600) == 0, listen(fd, 16) == 0 else {
            let e = errno
            close(fd)
            throw CMKError(.mountFailed, "cannot listen on \(path): \(String(cString: strerror(e)))")
        }
        var st = stat()
        let owner = stat(fs.volume.path, &st) == 0 ? st.st_uid : 0
        Thread.detachNewThread {
            while true {
                let client = accept(fd, nil, nil)
                if client < 0 { if errno == EINTR { continue }; usleep(10_000); continue }
                serve(client, fs, owner: owner)
                close(client)
            }
        }
    }

    static func fillAddress(_ addr: inout sockaddr_un, _ path: String) -> Bool {
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < 108 else { return false }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        return true
    }

    private static func serve(_ client: Int32, _ fs: FileSystem, owner: uid_t) {
        var cred = PeerCredentials()
        var length = socklen_t(MemoryLayout<PeerCredentials>.size)
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        guard getsockopt(client, SOL_SOCKET, SO_PEERCRED, &cred, &length) == 0, cred.uid == 0 || cred.uid == owner else {
            reply(client, ControlResponse(ok: false, error: "permission denied: only root or the volume's owner may control the mount"))
            return
        }
        guard let line = readLine(client), let request = try? JSONDecoder().decode(ControlRequest.self, from: line) else {
            reply(client, ControlResponse(ok: false, error: "malformed request"))
            return
        }
        reply(client, handle(request, fs, peer: cred))
    }

    static func handle(_ request: ControlRequest, _ fs: FileSystem, peer: PeerCredentials) -> ControlResponse {
        switch request.op {
        case "stats":
            var response = ControlResponse(ok: true)
            response.stats = fs.cache.stats()
            response.openFiles = fs.openFileCount
            return response
        case "flush", "flush-key":
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
            // The flush's audit record is durable before the command hears of it.
            do { try fs.audit?.sync() } catch {
                return ControlResponse(ok: false, error: "flushed, but the audit record could not be made durable: \(error)")
            }
            return response
        case "audit":
            guard let event = request.event, let log = fs.audit else {
                return ControlResponse(ok: fs.audit == nil, error: fs.audit == nil ? nil : "audit needs event")
            }
            do {
                try log.append(AuditEvent(event, keyID: request.keyID, keyVersion: request.version, uid: Int(peer.uid),
                                          gid: Int(peer.gid), pid: Int(peer.pid), process: processName(peer.pid),
                                          detail: request.reason), durable: true)
                return ControlResponse(ok: true)
            } catch {
                return ControlResponse(ok: false, error: "the audit record could not be written: \(error)")
            }
        default:
            return ControlResponse(ok: false, error: "unknown op '\(request.op)'")
        }
    }

    private static func readLine(_ fd: Int32) -> Data? {
        var data = Data()
        var byte: UInt8 = 0
        while data.count < 65536 {
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

/// `struct ucred` (pid, uid, gid), which glibc declares only under _GNU_SOURCE.
struct PeerCredentials {
    var pid: Int32 = 0
    var uid: UInt32 = 0
    var gid: UInt32 = 0
}
