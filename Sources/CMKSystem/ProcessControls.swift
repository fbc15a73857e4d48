import CLinux

/// prctl(2) and malloc settings of the calling process.
public enum ProcessControls {
    /// PR_SET_DUMPABLE 0: no core file, and only a process with CAP_SYS_PTRACE may attach to
    /// this one or read its memory.
    public static func forbidCoreDumps() throws(SystemError) {
        try Retry.checkReturned("prctl(PR_SET_DUMPABLE)") { cmkfs_forbid_core_dumps() }
    }

    /// PR_GET_DUMPABLE: whether this process may dump core.
    public static var isDumpable: Bool { cmkfs_dumpable() == 1 }

    /// mallopt(M_ARENA_MAX): glibc's malloc makes at most `count` arenas (the main one
    /// included) instead of up to eight per core, one per thread that allocates while the others
    /// are busy. Each arena is a heap of its own, grown and fragmented on its own: a long-lived
    /// object stays wherever the thread that made it allocated, and the free space around it
    /// in each heap is resident. Takes effect for arenas made after the call, so it is called
    /// before a process starts its threads.
    public static func limitMallocArenas(to count: Int32) throws(SystemError) {
        try Retry.checkReturned("mallopt(M_ARENA_MAX)") { cmkfs_limit_malloc_arenas(count) }
    }
}
