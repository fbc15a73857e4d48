import Foundation
import CMKSystem

/// Starting and waiting for child processes with `posix_spawn` (no fork in a threaded process).
enum Spawn {
    /// Starts `path` with `arguments`; `fileActions` maps child descriptors. Returns the pid.
    static func start(_ path: String, _ arguments: [String], stdin: Int32? = nil, stdout: Int32? = nil,
                      stderr: Int32? = nil, extra: [(Int32, Int32)] = [], newSession: Bool = false) -> pid_t? {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        if let stdin { posix_spawn_file_actions_adddup2(&actions, stdin, 0) }
        if let stdout { posix_spawn_file_actions_adddup2(&actions, stdout, 1) }
        if let stderr { posix_spawn_file_actions_adddup2(&actions, stderr, 2) }
        for (from, to) in extra { posix_spawn_file_actions_adddup2(&actions, from, to) }
        // A daemon must not keep its caller's other descriptors open: a caller waiting for EOF on
        // a pipe or socket it passed down (Foundation's Process does) would wait as long as the mount lives.
        if newSession { markInheritedDescriptorsCloseOnExec() }
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        // POSIX_SPAWN_SETSID (0x80, glibc) is hidden behind _GNU_SOURCE: detach from the terminal.
        if newSession { posix_spawnattr_setflags(&attr, 0x80) }
        let argv: [UnsafeMutablePointer<CChar>?] = ([path] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, path, &actions, &attr, argv, environ)
        return rc == 0 ? pid : nil
    }

    /// Sets close-on-exec on every descriptor above stderr (the dup2 actions still hand over theirs).
    private static func markInheritedDescriptorsCloseOnExec() {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd") else { return }
        for fd in names.compactMap({ Int32($0) }) where fd > 2 {
            try? Descriptor(rawValue: fd).setCloseOnExec()
        }
    }

    /// Waits for `pid`; returns its exit status (128+signal when killed).
    static func wait(_ pid: pid_t) -> Int32 {
        (try? ChildProcess.wait(pid)) ?? 0
    }

    /// Runs a program to completion, returning its status and what it wrote to stderr.
    static func run(_ path: String, _ arguments: [String]) -> (status: Int32, stderr: String) {
        guard let errors = try? PipeEnds(), let devnull = try? FileDescriptor.open("/dev/null", O_RDWR | O_CLOEXEC) else {
            return (127, "pipe failed")
        }
        guard let pid = start(path, arguments, stdin: devnull.rawValue, stdout: devnull.rawValue, stderr: errors.writing.rawValue) else {
            return (127, "cannot run \(path)")
        }
        try? errors.writing.close()
        let output = FileHandle(fileDescriptor: errors.reading.release(), closeOnDealloc: true).readDataToEndOfFile()
        return (wait(pid), String(decoding: output, as: UTF8.self))
    }

    /// This executable's path.
    static var selfPath: String {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    }
}
