import Foundation
import XCTest
import CMKCrypto
import CMKKeys
import CMKSocketKMS

/// What only a KMS across a socket can do, against a real `cmkfs-kms serve` process (the contract
/// itself is in ProviderContractTests): be killed, stopped, slow, refusing or flaky, and have its
/// keys changed by the customer.
final class SocketKMSTests: ProviderTestCase {
    var kms: KMSProcess!

    override func makeProvider() throws -> any KeyProvider {
        kms = KMSProcess(socket: scratch + "/kms.sock", state: scratch + "/state", logPath: scratch + "/kms.log")
        try kms.start()
        return SocketKMSProvider(socketPath: kms.socket, timeoutMilliseconds: 1000)
    }

    override func tearDown() {
        if let kms, let problem = kms.stop() { XCTFail(problem) }
        kms = nil
        super.tearDown()
    }

    var client: SocketKMSProvider { provider as! SocketKMSProvider }

    // MARK: the socket itself

    func testSocketIsMode0600AndRemovedOnSIGTERM() throws {
        var st = stat()
        XCTAssertEqual(stat(kms.socket, &st), 0)
        XCTAssertEqual(st.st_mode & S_IFMT, S_IFSOCK)
        XCTAssertEqual(st.st_mode & 0o777, 0o600)
        XCTAssertNil(kms.stop())
        XCTAssertFalse(FileManager.default.fileExists(atPath: kms.socket))
    }

    /// SO_PEERCRED: a caller that is neither root nor the owner is turned away even when the
    /// file mode would let it connect.
    func testOtherUsersAreRefused() throws {
        chmod(kms.socket, 0o666)
        chmod(scratch, 0o755)
        let probe = """
        import socket, struct, sys
        s = socket.socket(socket.AF_UNIX); s.settimeout(5); s.connect(sys.argv[1])
        s.sendall(struct.pack('>IBB', 2, 1, 0))
        n = struct.unpack('>I', s.recv(4))[0]; body = s.recv(n)
        print(body[0])
        """
        let path = scratch + "/probe.py"
        try probe.write(toFile: path, atomically: true, encoding: .utf8)
        chmod(path, 0o644)
        let r = Shell.run("/usr/bin/setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", Shell.python, path, kms.socket],
                          timeout: 30, logDir: scratch)
        XCTAssertTrue(r.succeeded, "\(r)")
        XCTAssertEqual(r.stdout.trimmingCharacters(in: .whitespacesAndNewlines), String(KMSProtocol.Status.forbidden.rawValue), "\(r)")
        XCTAssertNoThrow(try client.ping(), "root is still served")
    }

    // MARK: faults

    func testKilledKMSIsUnreachableAndReconnectsAfterRestart() throws {
        let key = try newKey()
        let ctx = WrapContext(volumeID: volumeA, fileID: file1)
        let d = try dek()
        let edek = try provider.wrap(d, with: key, context: ctx)
        kms.kill9()
        let start = Date()
        assertRefused("killed KMS", { e in "\(e)".contains("closed the connection") || "\(e)".contains("unreachable") }) {
            _ = try provider.unwrap(edek, with: key, context: ctx)
        }
        assertRefused("killed KMS, fresh connection", { e in "\(e)".contains("unreachable") }) {
            _ = try provider.unwrap(edek, with: key, context: ctx)
        }
        XCTAssertLessThan(Date().timeIntervalSince(start), 2.5, "refusals must be prompt")
        try kms.start()
        XCTAssertTrue(try provider.unwrap(edek, with: key, context: ctx).constantTimeEquals(d), "the same client reconnects")
    }

    func testStoppedKMSTimesOutInsteadOfHanging() throws {
        let key = try newKey()
        let ctx = WrapContext(volumeID: volumeA, fileID: file1)
        let edek = try provider.wrap(try dek(), with: key, context: ctx)
        kms.pause()
        let start = Date()
        assertRefused("stopped KMS", { e in "\(e)".contains("did not answer within 1000 ms") }) {
            _ = try provider.unwrap(edek, with: key, context: ctx)
        }
        let elapsed = Date().timeIntervalSince(start)
        XCTAssertGreaterThanOrEqual(elapsed, 0.9)
        XCTAssertLessThan(elapsed, 3, "bounded by the 1 s timeout")
        kms.signal(SIGCONT)
        XCTAssertNoThrow(try provider.unwrap(edek, with: key, context: ctx))
    }

    func testRefuseAllSaysRefusing() throws {
        let key = try newKey()
        _ = kms.stop()
        try kms.start(["--refuse-all"])
        assertRefused("refusing KMS", { e in Self.isUnavailable(e) && "\(e)".contains("is refusing requests") }) {
            _ = try provider.state(of: key)
        }
    }

    func testFailFractionFailsSomeCalls() throws {
        let key = try newKey()
        let ctx = WrapContext(volumeID: volumeA, fileID: file1)
        let d = try dek()
        let edek = try provider.wrap(d, with: key, context: ctx)
        _ = kms.stop()
        try kms.start(["--fail-fraction", "0.5"])
        var ok = 0, injected = 0
        for _ in 0..<200 {
            do {
                let got = try provider.unwrap(edek, with: key, context: ctx)
                XCTAssertTrue(got.constantTimeEquals(d))
                ok += 1
            } catch {
                let text = "\(error)"
                if text.contains("injected failure") { injected += 1 } else { XCTFail("unexpected \(text)") }
            }
        }
        XCTAssertEqual(ok + injected, 200)
        XCTAssertGreaterThan(ok, 50)
        XCTAssertGreaterThan(injected, 50)
    }

    func testLatencyIsAdded() throws {
        let key = try newKey()
        _ = kms.stop()
        try kms.start(["--latency-ms", "150"])
        let start = Date()
        XCTAssertEqual(try provider.state(of: key), .enabled)
        XCTAssertGreaterThanOrEqual(Date().timeIntervalSince(start), 0.15)
    }

    /// The customer disables, enables and destroys through `cmkfs-kms key …` on the same
    /// keystore while the server runs; the client sees each change on its next call.
    func testCustomerCommandsAreSeenByTheServer() throws {
        let created = kms.keyCommand(["create"], logDir: scratch)
        XCTAssertTrue(created.succeeded, "\(created)")
        let keyID = try XCTUnwrap(created.stdout.split(separator: " ").first.map(String.init))
        let key = KeyRef(keyID: keyID, version: 1)
        let ctx = WrapContext(volumeID: volumeA, fileID: file1)
        let d = try dek()
        let edek = try provider.wrap(d, with: key, context: ctx)
        XCTAssertTrue(kms.keyCommand(["disable", keyID], logDir: scratch).succeeded)
        assertRefused("disabled by the customer", Self.isDisabled) { _ = try provider.unwrap(edek, with: key, context: ctx) }
        XCTAssertTrue(kms.keyCommand(["list"], logDir: scratch).stdout.contains("\(keyID) v1=disabled"))
        XCTAssertTrue(kms.keyCommand(["enable", keyID], logDir: scratch).succeeded)
        XCTAssertTrue(try provider.unwrap(edek, with: key, context: ctx).constantTimeEquals(d))
        let refused = kms.keyCommand(["destroy", keyID], logDir: scratch)
        XCTAssertNotEqual(refused.status, 0, "destroy needs --force")
        XCTAssertTrue(kms.keyCommand(["destroy", keyID, "--force"], logDir: scratch).succeeded)
        assertRefused("destroyed by the customer", Self.isDestroyed) { _ = try provider.unwrap(edek, with: key, context: ctx) }
    }
}

/// Garbage on the socket: the server answers what it can parse with `bad_request`, drops a
/// connection whose frame length is absurd, and keeps serving everyone else.
final class SocketKMSRobustnessTests: XCTestCase {
    var scratch: String!
    var kms: KMSProcess!

    override func setUpWithError() throws {
        scratch = "/tmp/cmkfs-kr-\(UUID().uuidString.prefix(8).lowercased())"
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: false)
        kms = KMSProcess(socket: scratch + "/kms.sock", state: scratch + "/state", logPath: scratch + "/kms.log")
        try kms.start()
    }

    override func tearDown() {
        if let kms, let problem = kms.stop() { XCTFail(problem) }
        if let scratch { try? FileManager.default.removeItem(atPath: scratch) }
        super.tearDown()
    }

    func testMalformedRequestsDoNotHurtTheServer() throws {
        let probe = """
        import socket, struct, sys
        def ask(body):
            s = socket.socket(socket.AF_UNIX); s.settimeout(5); s.connect(sys.argv[1])
            s.sendall(struct.pack('>I', len(body)) + body)
            head = s.recv(4)
            if len(head) < 4: return 'closed'
            n = struct.unpack('>I', head)[0]; return s.recv(n)[0]
        print(ask(bytes([1, 99])))                         # unknown op
        print(ask(bytes([9, 0])))                          # unknown protocol version
        print(ask(bytes([1, 3, 0, 5]) + b'ab'))            # wrap with a truncated key id
        print(ask(bytes([1, 4, 0, 2]) + b'mk' + bytes(4) + bytes([0, 200])))  # field longer than the frame
        s = socket.socket(socket.AF_UNIX); s.settimeout(5); s.connect(sys.argv[1])
        s.sendall(struct.pack('>I', 0xFFFFFFFF) + b'x' * 16)  # absurd length: the server hangs up
        try:
            print('closed' if s.recv(4) == b'' else 'answered')
        except ConnectionResetError:
            print('closed')
        """
        let path = scratch + "/probe.py"
        try probe.write(toFile: path, atomically: true, encoding: .utf8)
        let r = Shell.run(Shell.python, [path, kms.socket], timeout: 30, logDir: scratch)
        XCTAssertTrue(r.succeeded, "\(r)")
        XCTAssertEqual(r.stdout.split(separator: "\n"), ["8", "8", "8", "8", "closed"], "\(r)")
        let client = SocketKMSProvider(socketPath: kms.socket, timeoutMilliseconds: 1000)
        XCTAssertNoThrow(try client.ping(), "the server still serves: \(kms.output())")
        let key = try client.createKey()
        XCTAssertEqual(try client.state(of: key), .enabled)
    }
}
