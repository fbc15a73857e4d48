import Glibc

/// The terminal calls on a descriptor (termios(3)).
extension Descriptor {
    /// isatty(3): whether this descriptor is a terminal.
    public var isTerminal: Bool { isatty(rawValue) == 1 }

    /// Runs `body` with the terminal's echo off (tcsetattr TCSAFLUSH), restoring its settings
    /// afterwards; nil, without running `body`, when this is not a terminal.
    public func withEchoOff<R>(_ body: () -> R) -> R? {
        var saved = termios()
        guard tcgetattr(rawValue, &saved) == 0 else { return nil }
        var quiet = saved
        quiet.c_lflag &= ~tcflag_t(ECHO)
        _ = Retry.onInterrupt { tcsetattr(rawValue, TCSAFLUSH, &quiet) }
        defer { _ = Retry.onInterrupt { tcsetattr(rawValue, TCSAFLUSH, &saved) } }
        return body()
    }
}

/// The process's view of paths.
extension ProcessControls {
    /// chdir(2).
    public static func changeDirectory(to path: String) throws(SystemError) {
        _ = try Retry.check("chdir", path: path) { chdir(path) }
    }

    /// getcwd(3): the working directory.
    public static func workingDirectory() throws(SystemError) -> String {
        guard let cwd = getcwd(nil, 0) else { throw SystemError("getcwd", errno: .current) }
        defer { free(cwd) }
        return String(cString: cwd)
    }

    /// realpath(3): `path` with every symlink, `.` and `..` resolved; it must exist.
    public static func realPath(_ path: String) throws(SystemError) -> String {
        guard let real = realpath(path, nil) else { throw SystemError("realpath", errno: .current, path: path) }
        defer { free(real) }
        return String(cString: real)
    }
}

extension FileDescriptor {
    /// A new empty file in `directory` (mkstemp(3), mode 0600, close-on-exec), already unlinked:
    /// it is gone once closed. (Swift's Glibc does not import memfd_create.)
    public static func anonymousFile(in directory: String) throws(SystemError) -> FileDescriptor {
        var template = Array((directory + "/.cmkfs-tmp.XXXXXX").utf8CString)
        let fd = try Retry.check("mkstemp", path: directory) { template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) } }
        let file = FileDescriptor(adopting: fd)
        try file.descriptor.setCloseOnExec()
        let path = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        try Descriptor.cwd.unlink(path)
        return file
    }
}
