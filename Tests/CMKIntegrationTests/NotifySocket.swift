import Foundation
import Glibc

/// A test-owned stand-in for systemd's notification socket: a Unix datagram socket bound to a
/// path, to be named in `$NOTIFY_SOCKET` for a daemon under test (sd_notify(3)).
final class NotifySocket {
    let path: String
    private let fd: Int32

    init(path: String) throws {
        self.path = path
        unlink(path)
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw FixtureError("socket failed: \(errno)") }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { throw FixtureError("path too long: \(path)") }
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: bytes) }
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard rc == 0 else { close(fd); throw FixtureError("bind \(path) failed: \(errno)") }
    }

    deinit {
        close(fd)
        unlink(path)
    }

    /// The next message's fields (`READY` → `1`, …), or nil after `deadline` seconds.
    func receive(deadline: TimeInterval) -> [String: String]? {
        let end = Date().addingTimeInterval(deadline)
        var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        while Date() < end {
            let rc = poll(&pfd, 1, 100)
            if rc <= 0 { continue }
            var buffer = [UInt8](repeating: 0, count: 4096)
            let n = recv(fd, &buffer, buffer.count, 0)
            guard n > 0 else { continue }
            var fields: [String: String] = [:]
            for line in String(decoding: buffer[..<n], as: UTF8.self).split(separator: "\n") {
                guard let eq = line.firstIndex(of: "=") else { continue }
                fields[String(line[..<eq])] = String(line[line.index(after: eq)...])
            }
            return fields
        }
        return nil
    }

    /// Messages until one has `field`; returns that one, or nil after `deadline` seconds.
    func receive(until field: String, deadline: TimeInterval) -> [String: String]? {
        let end = Date().addingTimeInterval(deadline)
        while Date() < end {
            guard let message = receive(deadline: end.timeIntervalSinceNow) else { return nil }
            if message[field] != nil { return message }
        }
        return nil
    }
}
