import Glibc

/// The calls on other processes: waiting for a child, signalling one. (Starting one is
/// posix_spawn(3), a library call the CLI makes with its file actions.)
public enum ChildProcess {
    /// waitpid(2) until `pid` has ended: its exit status, or 128 + the signal that killed it
    /// (the shell's convention).
    public static func wait(_ pid: pid_t) throws(SystemError) -> Int32 {
        var status: Int32 = 0
        _ = try Retry.check("waitpid") { waitpid(pid, &status, 0) }
        if status & 0x7F == 0 { return (status >> 8) & 0xFF }
        return 128 + (status & 0x7F)
    }

    /// kill(2).
    public static func signal(_ pid: pid_t, _ signal: Int32) throws(SystemError) {
        _ = try Retry.check("kill") { kill(pid, signal) }
    }
}

extension ProcessControls {
    /// umask(2): sets the file mode creation mask, returns the previous one (never fails).
    @discardableResult
    public static func setUmask(_ mask: mode_t) -> mode_t { umask(mask) }
}
