import Glibc

/// systemd's readiness protocol (sd_notify(3)) without libsystemd: one datagram of
/// `NAME=value` lines to the Unix socket named by `$NOTIFY_SOCKET`, which the service manager
/// sets for a `Type=notify` unit. The mount daemon sends `READY=1` once its mount answers,
/// `STATUS=` for `systemctl status`, and `STOPPING=1` when it unmounts.
struct ServiceNotifier: Sendable {
    /// The socket's address: a path, or an abstract name given with a leading `@`.
    let socketName: String

    /// The notifier the service manager asked for, or nil when not started by one.
    static func fromEnvironment() -> ServiceNotifier? {
        guard let raw = getenv("NOTIFY_SOCKET") else { return nil }
        let name = String(cString: raw)
        guard name.hasPrefix("/") || name.hasPrefix("@") else { return nil }
        return ServiceNotifier(socketName: name)
    }

    /// Sends one message; false when it could not be delivered (the service manager is gone,
    /// or the name does not fit a socket address). Never blocks.
    @discardableResult
    func send(_ fields: KeyValuePairs<String, String>) -> Bool {
        // One value per line: a newline inside a STATUS would start a field of its own.
        let message = fields.map { "\($0.key)=\($0.value.split(whereSeparator: \.isNewline).joined(separator: " "))" }
            .joined(separator: "\n")
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        var path = Array(socketName.utf8)
        if path.first == UInt8(ascii: "@") { path[0] = 0 }    // abstract namespace
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard path.count < capacity else { return false }
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: path) }
        // An abstract name is exactly as long as given; a path ends at its NUL.
        let length = MemoryLayout<sa_family_t>.size + path.count + (path.first == 0 ? 0 : 1)
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        let sent = message.withCString { text in
            withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    sendto(fd, text, strlen(text), Int32(MSG_NOSIGNAL), $0, socklen_t(length))
                }
            }
        }
        return sent == message.utf8.count
    }
}
