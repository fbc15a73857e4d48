import Glibc

/// getrlimit(2)/setrlimit(2) of the calling process.
public enum ResourceLimits {
    /// RLIMIT_NOFILE: how many descriptors the process may hold open (soft, hard).
    public static func openFiles() throws(SystemError) -> (current: rlim_t, maximum: rlim_t) {
        var limit = rlimit()
        _ = try Retry.check("getrlimit") { getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) }
        return (limit.rlim_cur, limit.rlim_max)
    }

    /// Sets RLIMIT_NOFILE; raising the hard limit needs CAP_SYS_RESOURCE (EPERM otherwise).
    public static func setOpenFiles(current: rlim_t, maximum: rlim_t) throws(SystemError) {
        var limit = rlimit(rlim_cur: current, rlim_max: maximum)
        _ = try Retry.check("setrlimit") { setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) }
    }
}
