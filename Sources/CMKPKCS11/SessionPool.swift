import Synchronization
import CPKCS11

/// Sessions for the multithreaded mount: a thread takes an idle session (or opens one), uses it
/// alone, and gives it back. Login state is per application in PKCS#11, so one `C_Login` covers
/// every session as long as at least one stays open; the pool never closes its last idle session.
final class SessionPool: Sendable {
    let module: PKCS11Module
    let slot: CK_SLOT_ID
    /// Idle session handles; guarded by the mutex, which is never held across a PKCS#11 call.
    private let idle = Mutex<[CK_SESSION_HANDLE]>([])
    /// Idle sessions kept beyond this many are closed (the mount has at most ~10 FUSE threads).
    let maxIdle: Int

    init(module: PKCS11Module, slot: CK_SLOT_ID, maxIdle: Int = 16) {
        self.module = module
        self.slot = slot
        self.maxIdle = maxIdle
    }

    deinit {
        for handle in idle.withLock({ $0 }) { PKCS11Session(module: module, handle: handle).close() }
    }

    /// Runs `body` with a session of its own. A session that failed in a way that breaks it
    /// (closed, logged out, device gone) is closed instead of pooled.
    func withSession<R>(_ body: (PKCS11Session) throws(PKCS11Failure) -> R) throws(PKCS11Failure) -> R {
        let session: PKCS11Session
        if let handle = idle.withLock({ $0.popLast() }) {
            session = PKCS11Session(module: module, handle: handle)
        } else {
            session = try PKCS11Session.open(module, slot: slot)
        }
        do {
            let result = try body(session)
            giveBack(session)
            return result
        } catch {
            if error.brokenSession { session.close() } else { giveBack(session) }
            throw error
        }
    }

    private func giveBack(_ session: PKCS11Session) {
        let keep = idle.withLock { handles -> Bool in
            guard handles.count < maxIdle else { return false }
            handles.append(session.handle)
            return true
        }
        if !keep { session.close() }
    }
}
