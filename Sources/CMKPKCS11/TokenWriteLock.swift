import Glibc
import CMKSystem

/// Serializes the writes to one token among this host's cmkfs processes (the mount, `cmkfs`
/// commands, `cmkfs-kms`); each write searches the token first, under the lock.
///
/// Why: SoftHSM2 (2.6.1, file object store) re-reads a token's directory only when the token's
/// generation counter on disk differs from the one the process last saw, and every object the
/// process creates or destroys sets its copy to the counter on disk plus one, adopting any other
/// process's bump without re-reading. A process that writes after another one created an object,
/// and before it searched again, then never sees that object: a mount writing its audit anchor
/// while `cmkfs key rotate` made the next master-key version could not find that version (every
/// file wrapped under it failed) until it was remounted. With the writes serialized and a search
/// first, each write starts from a fresh view, and a write by another process afterwards shows in
/// the counter at this process's next search. Tokens that are not SoftHSM2 pay one flock per write
/// (versions, tombstones, anchors: seconds apart at most). Programs other than cmkfs that write
/// the token (softhsm2-util, pkcs11-tool) do not take the lock.
struct TokenWriteLock: Sendable {
    /// `/run/lock/cmkfs-pkcs11-<module>-<token>.lock`, unsafe characters as `_`: one lock per
    /// token label and module (two tokens sharing a label share a lock, which costs only waiting).
    let path: String

    /// How long a write waits for the lock before it goes ahead without it: the lock is held for a
    /// few token calls, so a longer wait means a holder that is stuck or not cmkfs (/run/lock is
    /// world-writable on some systems: a file planted there must not stop the mount's anchors).
    static let maxWait = 10.0

    init(modulePath: String, tokenLabel: String, directory: String = "/run/lock") {
        let module = modulePath.split(separator: "/").last.map(String.init) ?? modulePath
        path = directory + "/cmkfs-pkcs11-" + Self.safe(module) + "-" + Self.safe(tokenLabel) + ".lock"
    }

    static func safe(_ s: String) -> String {
        String(s.unicodeScalars.prefix(64).map { c -> Character in
            switch c {
            case "a"..."z", "A"..."Z", "0"..."9", ".", "_", "-": Character(c)
            default: "_"
            }
        })
    }

    /// Runs `body` holding the lock (or without it, when the lock file cannot be opened or stays
    /// held past `maxWait`: the write goes ahead as it did before the lock existed).
    func around<R, E: Error>(_ body: () throws(E) -> R) throws(E) -> R {
        // A bare descriptor for the length of the call, closed (and so unlocked) on the way out.
        let fd = (try? Descriptor.cwd.openat(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, mode: 0o600).release()) ?? -1
        defer { if fd >= 0 { try? FileDescriptor(adopting: fd).close() } }
        if fd >= 0 { _ = try? Descriptor(rawValue: fd).lock(LOCK_EX, waitingUpTo: Self.maxWait, poll: 0.002) }
        return try body()
    }
}
