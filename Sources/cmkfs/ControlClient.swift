import Foundation
import CMKControl
import CMKVolume

/// Talks to a live mount through `VOLUME/control.sock` (docs/control-protocol.md).
enum ControlClient {
    /// Lets a live mount of `volume` finish what it defers (the key rows of unlinked files are
    /// deleted in batches) before a command counts rows. Any request does it; `stats` changes
    /// nothing. Silent when the volume is not mounted or the mount does not answer.
    static func settle(volume: String) {
        guard MountLock.holder(volumePath: absolute(volume)) != nil else { return }
        _ = try? send(.stats, volume: volume)
    }

    /// Sends one request; throws when the volume is not mounted or the mount does not answer.
    static func send(_ request: ControlRequest, volume: String) throws(CMKError) -> ControlResponse {
        let path = absolute(volume) + "/control.sock"
        guard MountLock.holder(volumePath: absolute(volume)) != nil else {
            throw CMKError(.notMounted, "\(absolute(volume)) is not mounted", hint: "mount it first: cmkfs mount \(volume) MOUNTPOINT")
        }
        let response: ControlResponse
        do { response = try ControlChannel.send(request, to: path, timeoutMilliseconds: 10_000) } catch {
            switch error {
            case .unreachable(let why): throw CMKError(.io, "cannot reach the live mount's control socket \(path): \(why)")
            case .sendFailed: throw CMKError(.io, "cannot send to \(path)")
            case .noAnswer: throw CMKError(.io, "the live mount did not answer on \(path)")
            }
        }
        guard response.ok else {
            throw CMKError(.io, "the live mount refused: \(response.error ?? "no reason")")
        }
        return response
    }
}
