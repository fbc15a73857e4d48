import Foundation
import XCTest

/// A python3 `http.server` started by a test on a free 127.0.0.1 port (HTTP/1.1 with keep-alive,
/// optionally TLS), stopped by `stop()` in tearDown whatever happened.
final class LocalHTTPServer {
    /// Answers: /echo (method, path, body, headers, and the number of the connection it came on),
    /// /status/N (status N), /slow (answers after 30 s), /big/N (N bytes).
    static let script = #"""
import http.server, json, socketserver, ssl, sys, threading, time
port_file, cert, key = sys.argv[1], sys.argv[2], sys.argv[3]
lock = threading.Lock()
connections = [0]
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # two writes per answer would wait for a delayed ACK
    def setup(self):
        super().setup()
        with lock:
            connections[0] += 1
            self.connection_number = connections[0]
    def log_message(self, *args): pass
    def answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.path.startswith("/status/"):
            out, status = b"{}", int(self.path.split("/")[2])
        elif self.path == "/slow":
            time.sleep(30); out, status = b"{}", 200
        elif self.path.startswith("/big/"):
            out, status = b"x" * int(self.path.split("/")[2]), 200
        else:
            out = json.dumps({"method": self.command, "path": self.path, "body": body.decode("latin-1"),
                              "headers": {k.lower(): v for k, v in self.headers.items()},
                              "connection": self.connection_number}).encode()
            status = 200
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Test", "yes")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
    do_GET = do_POST = do_PUT = do_DELETE = do_LIST = answer
class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
server = Server(("127.0.0.1", 0), Handler)
if cert:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
with open(port_file + ".tmp", "w") as f: f.write(str(server.server_address[1]))
import os; os.rename(port_file + ".tmp", port_file)
server.serve_forever()
"""#

    let directory: String
    let process: Process
    let port: Int
    let tls: Bool
    var baseURL: String { "\(tls ? "https" : "http")://\(tls ? "localhost" : "127.0.0.1"):\(port)" }
    /// With TLS: the server's self-signed certificate (PEM), which is its own CA.
    var certificate: String { directory + "/cert.pem" }

    init(tls: Bool = false) throws {
        directory = NSTemporaryDirectory() + "cmkfs-http-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        self.tls = tls
        try Self.script.write(toFile: directory + "/server.py", atomically: true, encoding: .utf8)
        if tls {
            try Self.run("/usr/bin/openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                                              "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                                              "-keyout", directory + "/key.pem", "-out", directory + "/cert.pem"])
        }
        let portFile = directory + "/port"
        process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        process.arguments = [directory + "/server.py", portFile, tls ? directory + "/cert.pem" : "", tls ? directory + "/key.pem" : ""]
        process.standardInput = FileHandle(forReadingAtPath: "/dev/null")
        process.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
        try process.run()
        var found: Int?
        let end = Date().addingTimeInterval(20)
        while found == nil, Date() < end, process.isRunning {
            found = (try? String(contentsOfFile: portFile, encoding: .utf8)).flatMap { Int($0) }
            if found == nil { Thread.sleep(forTimeInterval: 0.02) }
        }
        guard let found else {
            process.terminate()
            throw NSError(domain: "LocalHTTPServer", code: 1, userInfo: [NSLocalizedDescriptionKey: "the test server did not start"])
        }
        port = found
    }

    func stop() {
        if process.isRunning {
            process.terminate()
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(atPath: directory)
    }

    private static func run(_ tool: String, _ args: [String]) throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: tool)
        p.arguments = args
        p.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
        p.standardError = FileHandle(forWritingAtPath: "/dev/null")
        try p.run()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else {
            throw NSError(domain: "LocalHTTPServer", code: 2, userInfo: [NSLocalizedDescriptionKey: "\(tool) failed"])
        }
    }

    /// A 127.0.0.1 port nothing listens on: bound, then closed.
    static func closedPort() -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { p -> Int32 in
                _ = bind(fd, p, length)
                return getsockname(fd, p, &length)
            }
        }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}
