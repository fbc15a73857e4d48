import CMKCrypto

/// The HTTP methods the providers use. Vault's LIST is sent as a custom method.
public enum HTTPMethod: String, Sendable {
    case get = "GET", post = "POST", put = "PUT", delete = "DELETE", list = "LIST"
}

/// A request: method, absolute http(s) URL, header fields, and an optional body.
///
/// The body may carry key material (a Vault transit encrypt carries the DEK), so it is held in an
/// `HTTPBody`, wiped when released, and handed to curl without a copy.
public struct HTTPRequest: Sendable {
    public var method: HTTPMethod
    public var url: String
    /// Header fields in order; a name may repeat.
    public var headers: [(name: String, value: String)]
    public var body: HTTPBody?

    public init(method: HTTPMethod, url: String, headers: [(name: String, value: String)] = [], body: HTTPBody? = nil) {
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body
    }
}

/// A response: the final status, its header fields (names lower-cased), and the body.
public struct HTTPResponse: Sendable {
    public let status: Int
    public let headers: [(name: String, value: String)]
    public let body: HTTPBody
    /// Whether the request went over a kept-alive connection (no new connection was made).
    public let connectionReused: Bool

    public init(status: Int, headers: [(name: String, value: String)], body: HTTPBody, connectionReused: Bool = false) {
        self.status = status
        self.headers = headers
        self.body = body
        self.connectionReused = connectionReused
    }

    /// The first value of header `name` (case-insensitive), or nil.
    public func header(_ name: String) -> String? {
        let lower = name.lowercased()
        return headers.first { $0.name == lower }?.value
    }
}

/// Message bytes in a buffer that is wiped with `OPENSSL_cleanse` when it grows or is released,
/// since a KMS request or answer may hold a data key in clear (base64 is not protection).
public final class HTTPBody: @unchecked Sendable {
    // Sound because the buffer is written only while one transfer builds the body (a single
    // thread: curl calls the write callback on the thread running `curl_easy_perform`) and is
    // only read after that transfer returned and published the body.
    private var storage: UnsafeMutableRawBufferPointer
    /// The number of bytes in the body.
    public private(set) var count: Int

    /// An empty body that can grow.
    public init(capacity: Int = 0) {
        storage = UnsafeMutableRawBufferPointer.allocate(byteCount: max(capacity, 16), alignment: 16)
        count = 0
    }

    /// A body holding a copy of `bytes`.
    public convenience init<C: Collection>(_ bytes: C) where C.Element == UInt8 {
        self.init(capacity: bytes.count)
        append(Array(bytes))
    }

    /// A body holding the UTF-8 of `text`.
    public convenience init(text: String) {
        self.init(Array(text.utf8))
    }

    deinit {
        secureZero(storage)
        storage.deallocate()
    }

    /// Appends `bytes`, growing (and wiping the old buffer) as needed.
    public func append(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count > 0 else { return }
        if count + bytes.count > storage.count {
            let grown = UnsafeMutableRawBufferPointer.allocate(byteCount: max(storage.count * 2, count + bytes.count), alignment: 16)
            grown.copyMemory(from: UnsafeRawBufferPointer(rebasing: storage[0..<count]))
            secureZero(storage)
            storage.deallocate()
            storage = grown
        }
        UnsafeMutableRawBufferPointer(rebasing: storage[count..<(count + bytes.count)]).copyMemory(from: bytes)
        count += bytes.count
    }

    public func append(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { append($0) }
    }

    /// Calls `body` with the bytes; the pointer must not escape.
    public func withUnsafeBytes<R, E: Error>(_ body: (UnsafeRawBufferPointer) throws(E) -> R) throws(E) -> R {
        try body(UnsafeRawBufferPointer(rebasing: storage[0..<count]))
    }

    /// A copy of the bytes, for bodies that hold no secret (errors, metadata).
    public var bytes: [UInt8] { withUnsafeBytes { Array($0) } }

    /// The bytes as UTF-8 text (invalid sequences repaired), for bodies that hold no secret.
    public var text: String { withUnsafeBytes { String(decoding: $0, as: UTF8.self) } }
}
