import Foundation
import CMKUnixSocket

/// systemd's readiness protocol (sd_notify(3)) without libsystemd: one datagram of
/// `NAME=value` lines to the Unix socket named by `$NOTIFY_SOCKET`, which the service manager
/// sets for a `Type=notify` unit. The mount daemon sends `READY=1` once its mount answers,
/// `STATUS=` for `systemctl status`, and `STOPPING=1` when it unmounts.
struct ServiceNotifier: Sendable {
    /// The socket's address: a path, or an abstract name given with a leading `@`.
    let socketName: String

    /// The notifier the service manager asked for, or nil when not started by one.
    static func fromEnvironment() -> ServiceNotifier? {
        guard let name = ProcessInfo.processInfo.environment["NOTIFY_SOCKET"] else { return nil }
        guard name.hasPrefix("/") || name.hasPrefix("@") else { return nil }
        return ServiceNotifier(socketName: name)
    }

    /// Sends one message; false when it could not be delivered (the service manager is gone,
    /// or the name does not fit a socket address).
    @discardableResult
    func send(_ fields: KeyValuePairs<String, String>) -> Bool {
        // One value per line: a newline inside a STATUS would start a field of its own.
        let message = fields.map { "\($0.key)=\($0.value.split(whereSeparator: \.isNewline).joined(separator: " "))" }
            .joined(separator: "\n")
        return (try? UnixSocket.sendDatagram(Array(message.utf8), to: socketName)) != nil
    }
}
