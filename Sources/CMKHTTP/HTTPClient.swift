import Synchronization

/// A blocking HTTP/1.1 client over libcurl, safe to call from many threads at once.
///
/// Each call borrows a curl handle from a pool and returns it afterwards, so a keep-alive
/// connection opened by one request is reused by a later one, and as many requests are in flight
/// as there are calling threads (see `forEachConcurrently`). TLS peers are always verified.
/// docs/design-notes.md says why libcurl rather than async-http-client.
public final class HTTPClient: Sendable {
    /// Deadlines, trust, and limits; the defaults suit a KMS on the same network.
    public struct Configuration: Sendable, Equatable {
        /// How long to wait for the TCP (and TLS) connection.
        public var connectTimeoutMilliseconds: Int
        /// How long one whole request may take, connection included: an unreachable or stuck
        /// server costs at most this, never a hang.
        public var totalTimeoutMilliseconds: Int
        /// A PEM file of CA certificates to trust instead of the system's, or nil.
        public var caFile: String?
        /// Idle handles (and so keep-alive connections) kept for reuse.
        public var maxIdleHandles: Int
        /// Answers larger than this fail with `.responseTooLarge` (a hostile server cannot fill memory).
        public var maxResponseBytes: Int

        public init(connectTimeoutMilliseconds: Int = 3_000, totalTimeoutMilliseconds: Int = 10_000, caFile: String? = nil,
                    maxIdleHandles: Int = 32, maxResponseBytes: Int = 16 << 20) {
            self.connectTimeoutMilliseconds = connectTimeoutMilliseconds
            self.totalTimeoutMilliseconds = totalTimeoutMilliseconds
            self.caFile = caFile
            self.maxIdleHandles = maxIdleHandles
            self.maxResponseBytes = maxResponseBytes
        }
    }

    public let configuration: Configuration
    /// Idle handles; guarded by the mutex, which is never held across a transfer.
    private let idle = Mutex<[CurlHandle]>([])

    public init(configuration: Configuration = Configuration()) {
        self.configuration = configuration
    }

    /// Sends `request` and returns the server's answer, whatever its status.
    public func send(_ request: HTTPRequest) throws(HTTPError) -> HTTPResponse {
        try validate(request)
        guard let handle = idle.withLock({ $0.popLast() }) ?? CurlHandle() else {
            throw .transferFailed(url: request.url, curlCode: -1, message: "curl could not create a handle")
        }
        defer {
            idle.withLock { handles in
                if handles.count < configuration.maxIdleHandles { handles.append(handle) }
            }
        }
        return try handle.perform(request, configuration)
    }

    /// The number of pooled idle handles (for tests and `status`).
    public var idleHandles: Int { idle.withLock { $0.count } }

    private func validate(_ request: HTTPRequest) throws(HTTPError) {
        let lower = request.url.lowercased()
        guard lower.hasPrefix("http://") || lower.hasPrefix("https://") else {
            throw .invalidRequest("\(request.url) is not an http:// or https:// URL")
        }
        guard !request.url.contains(where: { $0.isNewline || $0 == " " }) else {
            throw .invalidRequest("the URL contains white space")
        }
        for (name, value) in request.headers {
            guard !name.isEmpty, !name.contains(where: { $0 == ":" || $0.isNewline || $0 == " " }),
                  !value.contains(where: \.isNewline) else {
                throw .invalidRequest("malformed header field \(name)")
            }
        }
    }
}
