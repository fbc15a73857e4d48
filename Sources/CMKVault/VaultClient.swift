import Foundation
import CMKCrypto
import CMKHTTP

/// One Vault HTTP API call's outcome: the status and body, or why there was none.
struct VaultAnswer {
    let status: Int
    let body: HTTPBody
    /// Vault's `request_id`, which its audit device records too (the join key for the customer).
    var requestID: String? { json?["request_id"] as? String }
    /// The body as JSON (only for bodies that hold no secret).
    var json: [String: Any]? { try? JSONSerialization.jsonObject(with: Data(body.bytes)) as? [String: Any] }
    var data: [String: Any]? { json?["data"] as? [String: Any] }
    /// Vault's `errors` list, joined: never holds key material (Vault does not echo plaintext).
    var errors: String {
        let list = (json?["errors"] as? [Any])?.map { "\($0)" } ?? []
        return list.isEmpty ? "HTTP \(status)" : list.joined(separator: "; ")
    }
}

/// The Vault HTTP API over `HTTPClient`: token and namespace headers, JSON bodies, and the
/// request context as `X-Cmkfs-*` headers (which the customer's audit device records once told
/// to: docs/operator-guide.md).
final class VaultClient: Sendable {
    let settings: VaultSettings
    private let http: HTTPClient
    /// The token, kept wiped; it becomes a header string only for the duration of a request
    /// (curl copies headers into its own list, which it frees after the transfer).
    private let token: SecretBytes

    init(settings: VaultSettings, token: SecretBytes) {
        self.settings = settings
        self.token = token
        http = HTTPClient(configuration: .init(connectTimeoutMilliseconds: settings.connectTimeoutMilliseconds,
                                               totalTimeoutMilliseconds: settings.timeoutMilliseconds,
                                               caFile: settings.caFile, maxIdleHandles: 32, maxResponseBytes: 64 << 20))
    }

    /// `METHOD /v1/<mount>/<path>` with `body` (`mount`: the transit mount unless another is
    /// named); `context` goes into the `X-Cmkfs-*` headers.
    func call(_ method: HTTPMethod, _ path: String, body: HTTPBody? = nil, mount: String? = nil,
              context: [(String, String)] = []) throws(HTTPError) -> VaultAnswer {
        var headers: [(name: String, value: String)] = [
            ("X-Vault-Token", token.withUnsafeBytes { String(decoding: $0, as: UTF8.self) }),
            ("X-Vault-Request", "true"),
        ]
        if body != nil { headers.append(("Content-Type", "application/json")) }
        if let namespace = settings.namespace { headers.append(("X-Vault-Namespace", namespace)) }
        for (name, value) in context { headers.append(("X-Cmkfs-\(name)", value)) }
        let url = "\(settings.address)/v1/\(mount ?? settings.mount)/\(path)"
        let response = try http.send(HTTPRequest(method: method, url: url, headers: headers, body: body))
        return VaultAnswer(status: response.status, body: response.body)
    }

    /// A JSON body from non-secret values.
    static func json(_ object: [String: Any]) -> HTTPBody {
        HTTPBody((try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data("{}".utf8))
    }

    /// The first `"name":"…"` string value in `body`, decoded from base64 straight into a secret
    /// (the decrypt answer's plaintext: never turned into a Swift string).
    static func secretField(_ name: String, in body: HTTPBody) -> SecretBytes? {
        let needle = Array("\"\(name)\":\"".utf8)
        return body.withUnsafeBytes { bytes -> SecretBytes? in
            guard bytes.count >= needle.count else { return nil }
            var i = 0
            while i + needle.count <= bytes.count {
                if bytes[i] == needle[0], needle.indices.allSatisfy({ bytes[i + $0] == needle[$0] }) {
                    let start = i + needle.count
                    guard let end = bytes[start...].firstIndex(of: UInt8(ascii: "\"")) else { return nil }
                    return Base64.decodeSecret(UnsafeRawBufferPointer(rebasing: bytes[start..<end]))
                }
                i += 1
            }
            return nil
        }
    }
}
