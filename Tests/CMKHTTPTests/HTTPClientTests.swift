import Foundation
import Synchronization
import XCTest
import CMKHTTP

final class HTTPClientTests: XCTestCase {
    var server: LocalHTTPServer?

    override func tearDown() {
        server?.stop()
        server = nil
        super.tearDown()
    }

    private func json(_ response: HTTPResponse) throws -> [String: Any] {
        try XCTUnwrap(JSONSerialization.jsonObject(with: Data(response.body.bytes)) as? [String: Any])
    }

    func testPostSendsMethodHeadersAndBodyAndReadsTheAnswer() throws {
        let server = try LocalHTTPServer()
        self.server = server
        let client = HTTPClient()
        let response = try client.send(HTTPRequest(method: .post, url: server.baseURL + "/echo?x=1",
                                                   headers: [("X-Vault-Token", "t0k"), ("Content-Type", "application/json")],
                                                   body: HTTPBody(text: #"{"a":1}"#)))
        XCTAssertEqual(response.status, 200)
        XCTAssertEqual(response.header("x-test"), "yes")
        XCTAssertEqual(response.header("Content-Type"), "application/json")
        let echo = try json(response)
        XCTAssertEqual(echo["method"] as? String, "POST")
        XCTAssertEqual(echo["path"] as? String, "/echo?x=1")
        XCTAssertEqual(echo["body"] as? String, #"{"a":1}"#)
        let headers = try XCTUnwrap(echo["headers"] as? [String: String])
        XCTAssertEqual(headers["x-vault-token"], "t0k")
        XCTAssertNil(headers["expect"], "no 100-continue round trip")
    }

    func testEveryMethodReachesTheServer() throws {
        let server = try LocalHTTPServer()
        self.server = server
        let client = HTTPClient()
        for method in [HTTPMethod.get, .put, .delete, .list] {
            let body: HTTPBody? = method == .put ? HTTPBody(text: "b") : nil
            let echo = try json(client.send(HTTPRequest(method: method, url: server.baseURL + "/echo", body: body)))
            XCTAssertEqual(echo["method"] as? String, method.rawValue)
            XCTAssertEqual(echo["body"] as? String, method == .put ? "b" : "")
        }
    }

    func testAnErrorStatusIsAResponseNotAnError() throws {
        let server = try LocalHTTPServer()
        self.server = server
        XCTAssertEqual(try HTTPClient().send(HTTPRequest(method: .get, url: server.baseURL + "/status/403")).status, 403)
    }

    func testKeepAliveReusesTheConnection() throws {
        let server = try LocalHTTPServer()
        self.server = server
        let client = HTTPClient()
        let first = try client.send(HTTPRequest(method: .get, url: server.baseURL + "/echo"))
        XCTAssertFalse(first.connectionReused)
        for _ in 0..<5 {
            let again = try client.send(HTTPRequest(method: .post, url: server.baseURL + "/echo", body: HTTPBody(text: "x")))
            XCTAssertTrue(again.connectionReused)
            XCTAssertEqual(try json(again)["connection"] as? Int, try json(first)["connection"] as? Int)
        }
    }

    func testManyThreadsShareThePoolAndReuseConnections() throws {
        let server = try LocalHTTPServer()
        self.server = server
        let client = HTTPClient()
        let width = 8, count = 400
        let url = server.baseURL + "/echo"
        let results = Mutex<[Int: (body: String, connection: Int)]>([:])
        let failures = Mutex<[String]>([])
        forEachConcurrently(count, width: width) { i in
            do {
                let r = try client.send(HTTPRequest(method: .post, url: url, body: HTTPBody(text: "n\(i)")))
                let echo = try JSONSerialization.jsonObject(with: Data(r.body.bytes)) as? [String: Any]
                results.withLock { $0[i] = ((echo?["body"] as? String) ?? "", (echo?["connection"] as? Int) ?? -1) }
            } catch {
                failures.withLock { $0.append("\(i): \(error)") }
            }
        }
        XCTAssertEqual(failures.withLock { $0 }, [])
        let all = results.withLock { $0 }
        XCTAssertEqual(all.count, count)
        for (i, r) in all { XCTAssertEqual(r.body, "n\(i)") }
        // One connection per handle at most: 400 requests on no more connections than threads.
        XCTAssertLessThanOrEqual(Set(all.values.map(\.connection)).count, width)
        XCTAssertLessThanOrEqual(client.idleHandles, width)
    }

    func testARefusedConnectionIsConnectFailedWithCurlsCode() throws {
        let url = "http://127.0.0.1:\(LocalHTTPServer.closedPort())/x"
        XCTAssertThrowsError(try HTTPClient().send(HTTPRequest(method: .get, url: url))) { error in
            guard case HTTPError.connectFailed(let u, let code, let message) = error else { return XCTFail("\(error)") }
            XCTAssertEqual(u, url)
            XCTAssertEqual(code, 7)
            XCTAssertFalse(message.isEmpty)
        }
    }

    func testAStuckServerTimesOutInsteadOfHanging() throws {
        let server = try LocalHTTPServer()
        self.server = server
        let client = HTTPClient(configuration: .init(totalTimeoutMilliseconds: 500))
        let start = Date()
        XCTAssertThrowsError(try client.send(HTTPRequest(method: .get, url: server.baseURL + "/slow"))) { error in
            guard case HTTPError.timedOut(_, let code, _) = error else { return XCTFail("\(error)") }
            XCTAssertEqual(code, 28)
        }
        XCTAssertLessThan(Date().timeIntervalSince(start), 5)
    }

    func testAnUnknownCertificateFailsTLSAndItsCAFileMakesItPass() throws {
        let server = try LocalHTTPServer(tls: true)
        self.server = server
        XCTAssertThrowsError(try HTTPClient().send(HTTPRequest(method: .get, url: server.baseURL + "/echo"))) { error in
            guard case HTTPError.tlsFailed(_, let code, let message) = error else { return XCTFail("\(error)") }
            XCTAssertEqual(code, 60)
            XCTAssertTrue(message.contains("certificate"), message)
        }
        let trusted = HTTPClient(configuration: .init(caFile: server.certificate))
        XCTAssertEqual(try trusted.send(HTTPRequest(method: .get, url: server.baseURL + "/echo")).status, 200)
    }

    func testAnAnswerLargerThanTheLimitFails() throws {
        let server = try LocalHTTPServer()
        self.server = server
        let client = HTTPClient(configuration: .init(maxResponseBytes: 1000))
        XCTAssertEqual(try client.send(HTTPRequest(method: .get, url: server.baseURL + "/big/1000")).body.count, 1000)
        XCTAssertThrowsError(try client.send(HTTPRequest(method: .get, url: server.baseURL + "/big/1001"))) { error in
            XCTAssertEqual(error as? HTTPError, .responseTooLarge(url: server.baseURL + "/big/1001", limit: 1000))
        }
    }

    func testRefusesWhatIsNotHTTPAndHeaderInjection() {
        let client = HTTPClient()
        for request in [HTTPRequest(method: .get, url: "file:///etc/passwd"),
                        HTTPRequest(method: .get, url: "http://127.0.0.1/ x"),
                        HTTPRequest(method: .get, url: "http://127.0.0.1/", headers: [("X-A", "1\r\nX-B: 2")])] {
            XCTAssertThrowsError(try client.send(request)) { error in
                guard case HTTPError.invalidRequest = error else { return XCTFail("\(error)") }
            }
        }
    }

    func testBodyGrowsAcrossAppends() {
        let body = HTTPBody()
        for i in 0..<100 { body.append(Array(repeating: UInt8(i), count: 37)) }
        XCTAssertEqual(body.count, 3700)
        XCTAssertEqual(body.bytes[36], 0)
        XCTAssertEqual(body.bytes[37], 1)
        XCTAssertEqual(body.bytes[3699], 99)
    }
}
