import XCTest
import Glibc
import CMKSystem

/// The socket calls over real AF_UNIX sockets: a stream round trip with the peer's credentials,
/// poll's timeout, a datagram to an abstract name, the addresses that do not fit, and the pipe.
final class SocketTests: XCTestCase {
    private var directory = ""

    override func setUpWithError() throws {
        var template = Array("/tmp/cmksocket-XXXXXX".utf8CString)
        directory = String(cString: try XCTUnwrap(mkdtemp(&template)))
    }

    override func tearDown() {
        try? FileManager.default.removeItem(atPath: directory)
    }

    private func isCloseOnExec(_ fd: Int32) -> Bool { fcntl(fd, F_GETFD) & FD_CLOEXEC != 0 }

    func testStreamRoundTripWithPeerCredentials() throws {
        let address = try XCTUnwrap(UnixSocketAddress(path: directory + "/s.sock"))
        let listener = try FileDescriptor.socket(AF_UNIX, SOCK_STREAM)
        try listener.descriptor.bind(to: address)
        try listener.descriptor.listen(backlog: 4)
        let client = try FileDescriptor.socket(AF_UNIX, SOCK_STREAM)
        try client.descriptor.setTimeouts(milliseconds: 5000)
        try client.descriptor.connect(to: address)
        let server = try listener.descriptor.accept()
        XCTAssertTrue(isCloseOnExec(server.rawValue), "accepted sockets are close-on-exec")
        XCTAssertTrue(isCloseOnExec(client.rawValue), "new sockets are close-on-exec")

        let peer = try server.descriptor.peerCredentials()
        XCTAssertEqual(peer, SocketCredentials(pid: getpid(), uid: getuid(), gid: getgid()))

        // Nothing to read yet: poll times out with no events.
        XCTAssertEqual(try server.descriptor.poll(Int16(POLLIN), timeoutMilliseconds: 10), 0)
        try client.descriptor.sendAll(Array("hello".utf8))
        XCTAssertNotEqual(try server.descriptor.poll(Int16(POLLIN), timeoutMilliseconds: 5000) & Int16(POLLIN), 0)
        XCTAssertEqual(try server.descriptor.receive(upTo: 64), Array("hello".utf8))

        // The client's side shut: the server reads the end; sending to a closed peer is EPIPE, not SIGPIPE.
        try client.descriptor.shutdown(SHUT_WR)
        XCTAssertEqual(try server.descriptor.receive(upTo: 64), [])
        try client.close()
        XCTAssertThrowsError(try server.descriptor.sendAll(Array("late".utf8))) { error in
            XCTAssertEqual((error as? SystemError)?.errno, Errno(rawValue: EPIPE))
        }
    }

    func testReceiveTimeoutThrowsEAGAIN() throws {
        let address = try XCTUnwrap(UnixSocketAddress(path: directory + "/t.sock"))
        let listener = try FileDescriptor.socket(AF_UNIX, SOCK_STREAM)
        try listener.descriptor.bind(to: address)
        try listener.descriptor.listen(backlog: 4)
        let client = try FileDescriptor.socket(AF_UNIX, SOCK_STREAM)
        try client.descriptor.setTimeouts(milliseconds: 20)
        try client.descriptor.connect(to: address)
        XCTAssertThrowsError(try client.descriptor.receive(upTo: 1)) { error in
            XCTAssertEqual((error as? SystemError)?.errno, .EAGAIN)
            XCTAssertEqual((error as? SystemError)?.call, "recv")
        }
    }

    func testDatagramToAnAbstractName() throws {
        let name = Array("cmksystem-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max))".utf8)
        let address = try XCTUnwrap(UnixSocketAddress(abstractName: name))
        let receiver = try FileDescriptor.socket(AF_UNIX, SOCK_DGRAM)
        try receiver.descriptor.bind(to: address)
        let sender = try FileDescriptor.socket(AF_UNIX, SOCK_DGRAM)
        let message = Array("READY=1".utf8)
        let named = try XCTUnwrap(UnixSocketAddress(name: "@" + String(decoding: name, as: UTF8.self)))
        let sent = try message.withUnsafeBytes { try sender.descriptor.send($0, to: named) }
        XCTAssertEqual(sent, message.count)
        XCTAssertEqual(try receiver.descriptor.receive(upTo: 64), message)
    }

    func testAddressesThatDoNotFitAreRefused() {
        XCTAssertNil(UnixSocketAddress(path: ""))
        XCTAssertNotNil(UnixSocketAddress(path: "/" + String(repeating: "a", count: UnixSocketAddress.maxPathBytes - 1)))
        XCTAssertNil(UnixSocketAddress(path: "/" + String(repeating: "a", count: UnixSocketAddress.maxPathBytes)))
        XCTAssertNil(UnixSocketAddress(name: "@" + String(repeating: "a", count: UnixSocketAddress.maxPathBytes)))
        XCTAssertNotNil(UnixSocketAddress(name: "@" + String(repeating: "a", count: UnixSocketAddress.maxPathBytes - 1)))
    }

    func testPipeEndsAreCloseOnExecAndCloseThemselves() throws {
        var reading: Int32 = -1, writing: Int32 = -1
        do {
            let ends = try PipeEnds()
            reading = ends.reading.rawValue
            writing = ends.writing.rawValue
            XCTAssertTrue(isCloseOnExec(reading) && isCloseOnExec(writing))
            try ends.writing.descriptor.writeAll(Array("x".utf8))
            XCTAssertEqual(try ends.reading.descriptor.read(upTo: 4), Array("x".utf8))
        }
        XCTAssertLessThan(fcntl(reading, F_GETFD), 0, "a dropped pipe closes its read end")
        XCTAssertLessThan(fcntl(writing, F_GETFD), 0, "a dropped pipe closes its write end")
    }
}
