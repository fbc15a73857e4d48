import Foundation
import CMKKeyService
import CMKVolume

/// Talks to a live mount through `VOLUME/control.sock` (docs/control-protocol.md).
enum ControlClient {
    /// Sends one request; throws when the volume is not mounted or the mount does not answer.
    static func send(_ request: ControlRequest, volume: String) throws(CMKError) -> ControlResponse {
        let path = absolute(volume) + "/control.sock"
        guard MountLock.holder(volumePath: absolute(volume)) != nil else {
            throw CMKError(.notMounted, "\(absolute(volume)) is not mounted", hint: "mount it first: cmkfs mount \(volume) MOUNTPOINT")
        }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw CMKError(.io, "cannot create a socket: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < 108 else { throw CMKError(.io, "control socket path \(path) is too long") }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in raw.copyBytes(from: bytes); raw[bytes.count] = 0 }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard rc == 0 else {
            throw CMKError(.io, "cannot reach the live mount's control socket \(path): \(String(cString: strerror(errno)))")
        }
        guard var data = try? JSONEncoder().encode(request) else { throw CMKError(.internalError, "cannot encode the request") }
        data.append(0x0A)
        let sent = data.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        guard sent == data.count else { throw CMKError(.io, "cannot send to \(path)") }
        var reply = Data()
        var byte: UInt8 = 0
        while read(fd, &byte, 1) == 1 && byte != 0x0A { reply.append(byte) }
        guard let response = try? JSONDecoder().decode(ControlResponse.self, from: reply) else {
            throw CMKError(.io, "the live mount did not answer on \(path)")
        }
        guard response.ok else {
            throw CMKError(.io, "the live mount refused: \(response.error ?? "no reason")")
        }
        return response
    }
}
