import CMKCrypto
import CMKHTTP

/// The production transport: the shared pooled keep-alive client (CMKHTTP). TLS peers are
/// verified; every request is bounded by the client's deadlines, so an unreachable or hung KMS
/// costs a timeout, never a hang.
public struct HTTPKMSTransport: AWSKMSTransport {
    public let client: HTTPClient

    public init(client: HTTPClient) { self.client = client }

    public func post(url: String, headers: [(name: String, value: String)], body: [UInt8]) throws(AWSKMSTransportError) -> AWSKMSResponse {
        // The request body may carry a data key (Encrypt): HTTPBody wipes its copy on release.
        let request = HTTPRequest(method: .post, url: url, headers: headers, body: HTTPBody(body))
        let response: HTTPResponse
        do { response = try client.send(request) } catch { throw AWSKMSTransportError(error.description) }
        return AWSKMSResponse(status: response.status, headers: response.headers, body: response.body.bytes)
    }
}
