import Foundation
import CMKKeyService
import CMKSocketKMS
import CMKVolume

/// Talks to a live mount through `VOLUME/control.sock` (docs/control-protocol.md).
enum ControlClient {
    /// Lets a live mount of `volume` finish what it defers (the key rows of unlinked files are
    /// deleted in batches) before a command counts rows. Any request does it; `stats` changes
    /// nothing. Silent when the volume is not mounted or the mount does not answer.
    static func settle(volume: String) {
        guard MountLock.holder(volumePath: absolute(volume)) != nil else { return }
        _ = try? send(ControlRequest(op: "stats"), volume: volume)
    }

    /// Sends one request; throws when the volume is not mounted or the mount does not answer.
    static func send(_ request: ControlRequest, volume: String) throws(CMKError) -> ControlResponse {
        let path = absolute(volume) + "/control.sock"
        guard MountLock.holder(volumePath: absolute(volume)) != nil else {
            throw CMKError(.notMounted, "\(absolute(volume)) is not mounted", hint: "mount it first: cmkfs mount \(volume) MOUNTPOINT")
        }
        let fd: Int32
        do { fd = try UnixSocket.connect(path, timeoutMilliseconds: 10_000) } catch {
            throw CMKError(.io, "cannot reach the live mount's control socket \(path): \(error)")
        }
        defer { close(fd) }
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
