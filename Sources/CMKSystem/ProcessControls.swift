import CLinux

/// prctl(2) settings of the calling process.
public enum ProcessControls {
    /// PR_SET_DUMPABLE 0: no core file, and only a process with CAP_SYS_PTRACE may attach to
    /// this one or read its memory.
    public static func forbidCoreDumps() throws(SystemError) {
        try Retry.checkReturned("prctl(PR_SET_DUMPABLE)") { cmkfs_forbid_core_dumps() }
    }

    /// PR_GET_DUMPABLE: whether this process may dump core.
    public static var isDumpable: Bool { cmkfs_dumpable() == 1 }
}
