import Dispatch
import Glibc
import Synchronization
import CMKSystem

/// `/proc/PID/loginuid`: the uid the process's login session started as (kept across `sudo`
/// and `su`; 4294967295 when never set), or nil when the process is gone or the kernel keeps none.
public func processLoginUID(_ pid: pid_t) -> UInt32? {
    guard let file = try? FileDescriptor.open("/proc/\(pid)/loginuid", O_RDONLY | O_CLOEXEC),
          let bytes = try? file.descriptor.read(upTo: 16) else { return nil }
    return UInt32(String(decoding: bytes.prefix { $0 >= 0x30 && $0 <= 0x39 }, as: UTF8.self))
}

/// User names by uid (getpwuid_r), remembered for a minute, a uid without a name too: audit
/// records name the caller's user and login user, and a lookup may go through NSS to a
/// directory service, which must not be paid per open. A user renamed shows under the old
/// name for at most that minute.
public final class UserNames: Sendable {
    public static let shared = UserNames()
    private struct Entry { let name: String?; let at: UInt64 }
    private let entries = Mutex<[UInt32: Entry]>([:])
    static let lifetimeNanoseconds: UInt64 = 60_000_000_000

    public func name(of uid: UInt32) -> String? {
        let now = DispatchTime.now().uptimeNanoseconds
        if let hit = entries.withLock({ $0[uid] }), now - hit.at < Self.lifetimeNanoseconds { return hit.name }
        let name = Self.lookUp(uid)
        entries.withLock { table in
            if table.count >= 4096 { table.removeAll(keepingCapacity: true) }
            table[uid] = Entry(name: name, at: now)
        }
        return name
    }

    static func lookUp(_ uid: UInt32) -> String? {
        var size = max(1024, Int(sysconf(Int32(_SC_GETPW_R_SIZE_MAX))))
        while size <= 1 << 20 {
            var buffer = [CChar](repeating: 0, count: size)
            // pw_name points into the buffer: read it while the buffer is pinned.
            let (rc, name) = buffer.withUnsafeMutableBufferPointer { b -> (Int32, String?) in
                var pwd = passwd()
                var result: UnsafeMutablePointer<passwd>?
                let rc = getpwuid_r(uid_t(uid), &pwd, b.baseAddress!, b.count, &result)
                guard rc == 0, let result, let name = result.pointee.pw_name as UnsafeMutablePointer<CChar>? else { return (rc, nil) }
                return (rc, String(cString: name))
            }
            if rc == ERANGE { size *= 4; continue }
            return name
        }
        return nil
    }
}
