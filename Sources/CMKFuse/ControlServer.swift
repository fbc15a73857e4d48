import Logging
import Foundation
import Synchronization
import CMKAudit
import CMKControl
import CMKKeyService
import CMKKeys
import CMKSystem
import CMKVolume

/// Answers the control requests of a live mount (docs/control-protocol.md); the transport, one
/// thread per connection and the peer check are `ControlChannel`'s.
enum ControlServer {
    /// Binds `VOLUME/control.sock` and serves it until the process ends.
    static func start(_ fs: FileSystem) throws(CMKError) {
        let path = fs.volume.path + "/control.sock"
        let owner = (try? Descriptor.cwd.stat(fs.volume.path))?.st_uid ?? 0
        do { try ControlChannel.serve(path, owner: owner) { request, peer in handle(request, fs, peer: peer) } } catch {
            throw CMKError(.mountFailed, "cannot listen on the control socket: \(error)",
                           hint: path.utf8.count > ControlChannel.maxPathBytes ? "use a shorter volume path" : nil)
        }
    }

    static func handle(_ request: ControlRequest, _ fs: FileSystem, peer: PeerCredentials) -> ControlResponse {
        FileSystem.logger.debug("control: \(request.op) from uid \(peer.uid) pid \(peer.pid)")
        switch request {
        // The kill switch first: nothing that can wait (the batched deletes below, an audit sync)
        // runs before the keys are gone.
        case .flush(let reason):
            return flush(keyID: nil, version: nil, reason: reason, fs, peer: peer)
        case .flushKey(let keyID, let version, let reason):
            return flush(keyID: keyID, version: version, reason: reason, fs, peer: peer)
        case .metrics:
            // Read every scrape interval: it reads no key rows, so it settles nothing.
            var response = ControlResponse(ok: true)
            response.metrics = fs.metricsText()
            return response
        default:
            break
        }
        // Whatever the command does next may read the key rows: they must not list unlinked files.
        fs.forgets.flush()
        switch request {
        case .flush, .flushKey, .metrics:
            preconditionFailure("answered above")
        case .stats:
            var response = ControlResponse(ok: true)
            response.stats = fs.cache.stats()
            response.openFiles = fs.openFileCount
            let t = fs.transport.snapshot
            response.transport = ControlTransport(requested: t.requested.rawValue, active: t.active.rawValue, ringRequests: t.ringRequests,
                                                  deviceRequests: t.deviceRequests, ringThreads: t.ringThreads, fallback: t.fallback)
            return response
        case .relabel:
            // After a rotation: cached DEKs follow their EDEK to the version that wraps it now.
            let active: KeyRef
            do { active = try fs.volume.reloadActiveKey() ?? fs.volume.activeKey } catch {
                return ControlResponse(ok: false, error: "cannot read the active key version: \(error)")
            }
            var response = ControlResponse(ok: true)
            response.flushed = fs.cache.relabel(active: active) { id in
                // The name key's lease follows its own wrap, like a DEK's.
                id == Volume.nameKeyFileID ? (try? fs.volume.nameKeyVersion()) ?? nil
                    : (try? fs.volume.metadata.fileKey(fileID: id))??.keyVersion
            }
            return response
        case .info(let path):
            return fs.info(relativePath: path)
        case .rekey(let path):
            do { try fs.rekey(relativePath: path, requester: (peer.uid, peer.gid, peer.pid)) } catch {
                var response = ControlResponse(ok: false, error: error.description)
                response.errno = error.errno
                return response
            }
            return ControlResponse(ok: true)
        case .audit(let record, let durable):
            // The same names `audit show --event` accepts: a record no filter can select, or a
            // typo that hides a revoke from a SIEM rule, is refused rather than chained.
            if let refusal = AuditEvent.refusal(event: record.event, result: record.result) {
                return ControlResponse(ok: false, error: refusal)
            }
            guard let log = fs.audit else { return ControlResponse(ok: true) }
            do {
                let who = fs.processNames.identity(of: peer.pid)
                try log.append(AuditEvent(record.event, result: record.result, error: record.error, fileID: record.fileID,
                                          path: record.path, keyID: record.keyID, keyVersion: record.keyVersion,
                                          uid: Int(peer.uid), gid: Int(peer.gid), pid: Int(peer.pid),
                                          process: who.name, detail: record.detail).naming(loginUID: who.loginUID),
                               durable: durable)
                return ControlResponse(ok: true)
            } catch {
                return ControlResponse(ok: false, error: "the audit record could not be written: \(error)")
            }
        }
    }

    /// Drops the keys, cuts open files, then lets the deferred deletions and the audit record
    /// catch up before answering.
    private static func flush(keyID: String?, version: Int?, reason: String?, _ fs: FileSystem, peer: PeerCredentials) -> ControlResponse {
        let start = monotonicNow()
        let why = (reason.map { "\($0); " } ?? "") + "requested by uid \(peer.uid) pid \(peer.pid)"
        let (flushed, cut) = fs.flushKeys(keyID: keyID, version: version, reason: why)
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
}
