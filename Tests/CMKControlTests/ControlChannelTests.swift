import Foundation
import XCTest
import Synchronization
import CMKControl
import CMKUnixSocket

/// Both ends of the control channel over a real Unix socket: a request reaches the handler as
/// its case with the caller's credentials, and lines that are not requests are answered the way
/// docs/control-protocol.md says, without reaching the handler.
final class ControlChannelTests: XCTestCase {
    var socket = ""

    override func setUpWithError() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("cmkfs-ctl-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        socket = dir + "/control.sock"
        addTeardownBlock { [dir] in try? FileManager.default.removeItem(atPath: dir) }
    }

    /// Sends raw bytes and returns the answer line.
    func raw(_ bytes: String) throws -> ControlResponse {
        let connection = try UnixSocket.connect(socket, timeoutMilliseconds: 10_000)
        let fd = connection.descriptor.rawValue
        let data = Array(bytes.utf8)
        XCTAssertEqual(write(fd, data, data.count), data.count)
        var reply = Data()
        var byte: UInt8 = 0
        while read(fd, &byte, 1) == 1 && byte != 0x0A { reply.append(byte) }
        return try JSONDecoder().decode(ControlResponse.self, from: reply)
    }

    func testRequestsReachTheHandlerAsTheirCaseAndBadLinesDoNot() throws {
        let seen = Mutex<[(ControlRequest, PeerCredentials)]>([])
        try ControlChannel.serve(socket, owner: getuid()) { request, peer in
            seen.withLock { $0.append((request, peer)) }
            var response = ControlResponse(ok: true)
            response.flushed = 7
            return response
        }
        var mode = stat()
        XCTAssertEqual(stat(socket, &mode), 0)
        XCTAssertEqual(mode.st_mode & 0o777, 0o600)

        let answer = try ControlChannel.send(.flushKey(keyID: "mk-1", version: 2, reason: "drill"), to: socket, timeoutMilliseconds: 10_000)
        XCTAssertTrue(answer.ok)
        XCTAssertEqual(answer.flushed, 7)
        let first = try XCTUnwrap(seen.withLock { $0.first })
        XCTAssertEqual(first.0, .flushKey(keyID: "mk-1", version: 2, reason: "drill"))
        XCTAssertEqual(first.1.pid, getpid())
        XCTAssertEqual(first.1.uid, getuid())

        XCTAssertEqual(try raw(#"{"op":"audit","event":"test-sync","reason":"sync","durable":true}"# + "\n").ok, true)
        XCTAssertEqual(seen.withLock { $0.last?.0 }, .audit(ControlAuditRecord(event: "test-sync", detail: "sync"), durable: true))

        let unknown = try raw(#"{"op":"mount"}"# + "\n")
        XCTAssertEqual(unknown.ok, false)
        XCTAssertEqual(unknown.error, "unknown op 'mount'")
        XCTAssertEqual(try raw(#"{"op":"rekey"}"# + "\n").error, "rekey needs path")
        XCTAssertEqual(try raw("not json\n").error, "malformed request")
        XCTAssertEqual(seen.withLock { $0.count }, 2, "refused lines never reach the handler")
    }

    func testAnUnreachableSocketIsSaidSo() {
        XCTAssertThrowsError(try ControlChannel.send(.stats, to: socket, timeoutMilliseconds: 1000)) { error in
            guard case .unreachable(let why) = error as? ControlChannelError else { return XCTFail("\(error)") }
            XCTAssertTrue(why.hasPrefix("connect: "), why)
        }
    }
}
