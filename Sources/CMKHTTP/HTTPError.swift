/// Why a request got no HTTP response. Each case keeps curl's result code and its message, so an
/// operator sees what curl saw ("Connection refused", "SSL certificate problem: …").
///
/// An HTTP status of 4xx or 5xx is a response, not an error of this layer: callers decide what it means.
public enum HTTPError: Error, Equatable, CustomStringConvertible {
    /// The URL is not an absolute http(s) URL, or a header is malformed.
    case invalidRequest(String)
    /// The host name did not resolve.
    case resolveFailed(url: String, curlCode: Int, message: String)
    /// Nothing accepted the connection (refused, unreachable network).
    case connectFailed(url: String, curlCode: Int, message: String)
    /// The connect or total deadline passed.
    case timedOut(url: String, curlCode: Int, message: String)
    /// The TLS handshake failed or the server's certificate did not verify.
    case tlsFailed(url: String, curlCode: Int, message: String)
    /// The answer was larger than the client accepts.
    case responseTooLarge(url: String, limit: Int)
    /// Any other transfer failure (connection reset, malformed answer, …).
    case transferFailed(url: String, curlCode: Int, message: String)

    public var description: String {
        switch self {
        case .invalidRequest(let why): return "invalid HTTP request: \(why)"
        case .resolveFailed(let url, let code, let message): return "cannot resolve the host of \(url): \(message) (curl \(code))"
        case .connectFailed(let url, let code, let message): return "cannot connect to \(url): \(message) (curl \(code))"
        case .timedOut(let url, let code, let message): return "request to \(url) timed out: \(message) (curl \(code))"
        case .tlsFailed(let url, let code, let message): return "TLS with \(url) failed: \(message) (curl \(code))"
        case .responseTooLarge(let url, let limit): return "the answer from \(url) exceeds \(limit) bytes"
        case .transferFailed(let url, let code, let message): return "request to \(url) failed: \(message) (curl \(code))"
        }
    }

    /// curl's result code, or nil for errors found before curl ran.
    public var curlCode: Int? {
        switch self {
        case .invalidRequest, .responseTooLarge: return nil
        case .resolveFailed(_, let code, _), .connectFailed(_, let code, _), .timedOut(_, let code, _),
             .tlsFailed(_, let code, _), .transferFailed(_, let code, _): return code
        }
    }
}
