import CCurl

/// curl's process-wide state, set up once before the first handle (curl_global_init is not
/// thread-safe, so it runs inside a Swift global initializer, which runs exactly once).
private let curlGlobalInit: CURLcode = curl_global_init(Int(CURL_GLOBAL_DEFAULT))

/// What the write and header callbacks fill during one transfer.
private final class TransferSink {
    let body = HTTPBody()
    var headers: [(name: String, value: String)] = []
    let limit: Int
    var overflowed = false
    init(limit: Int) { self.limit = limit }
}

private let writeBody: cmk_curl_data_fn = { data, size, count, userdata in
    let sink = Unmanaged<TransferSink>.fromOpaque(userdata!).takeUnretainedValue()
    let length = size * count
    guard sink.body.count + length <= sink.limit else {
        sink.overflowed = true
        return 0  // curl stops with CURLE_WRITE_ERROR
    }
    sink.body.append(UnsafeRawBufferPointer(start: data, count: length))
    return length
}

private let writeHeader: cmk_curl_data_fn = { data, size, count, userdata in
    let sink = Unmanaged<TransferSink>.fromOpaque(userdata!).takeUnretainedValue()
    let length = size * count
    let line = String(decoding: UnsafeRawBufferPointer(start: data, count: length), as: UTF8.self)
    if line.hasPrefix("HTTP/") {
        sink.headers.removeAll()  // a new status line: an interim (1xx) answer's fields do not count
    } else if let colon = line.firstIndex(of: ":") {
        let name = line[..<colon].lowercased()
        let value = line[line.index(after: colon)...].trimmingCharacters(in: " \t\r\n")
        sink.headers.append((name, value))
    }
    return length
}

private extension StringProtocol {
    func trimmingCharacters(in set: String) -> String {
        var s = Substring(self)
        while let c = s.first, set.contains(c) { s.removeFirst() }
        while let c = s.last, set.contains(c) { s.removeLast() }
        return String(s)
    }
}

/// One curl easy handle. curl keeps live connections in the handle across `curl_easy_reset`, so
/// reusing a handle reuses its keep-alive connection to the same server.
final class CurlHandle: @unchecked Sendable {
    // Sound because a handle is used by one thread at a time: `HTTPClient` hands it out from its
    // mutex-guarded pool and takes it back only after the transfer returned.
    private let handle: UnsafeMutableRawPointer
    private let errorBuffer = UnsafeMutablePointer<CChar>.allocate(capacity: Int(CURL_ERROR_SIZE) + 1)

    init?() {
        guard curlGlobalInit == CURLE_OK, let handle = curl_easy_init() else { return nil }
        self.handle = handle
    }

    deinit {
        curl_easy_cleanup(handle)
        errorBuffer.deallocate()
    }

    func perform(_ request: HTTPRequest, _ configuration: HTTPClient.Configuration) throws(HTTPError) -> HTTPResponse {
        curl_easy_reset(handle)
        errorBuffer[0] = 0
        let sink = TransferSink(limit: configuration.maxResponseBytes)
        var headerList: UnsafeMutablePointer<curl_slist>?
        defer { curl_slist_free_all(headerList) }
        // "Expect:" stops curl's 100-continue round trip on larger bodies.
        for line in request.headers.map({ "\($0.name): \($0.value)" }) + ["Expect:"] {
            guard let appended = curl_slist_append(headerList, line) else {
                throw .invalidRequest("out of memory building headers")
            }
            headerList = appended
        }
        let emptyBody = HTTPBody()
        let body = request.body ?? emptyBody
        let code: CURLcode = withExtendedLifetime(sink) {
            body.withUnsafeBytes { bodyBytes -> CURLcode in
                let sinkPointer = Unmanaged.passUnretained(sink).toOpaque()
                var options: [CURLcode] = [
                    cmk_curl_setopt_string(handle, CURLOPT_URL, request.url),
                    // Never signals (required with threads) and only http(s), never a redirect.
                    cmk_curl_setopt_long(handle, CURLOPT_NOSIGNAL, 1),
                    cmk_curl_setopt_string(handle, CURLOPT_PROTOCOLS_STR, "http,https"),
                    cmk_curl_setopt_long(handle, CURLOPT_FOLLOWLOCATION, 0),
                    cmk_curl_setopt_long(handle, CURLOPT_CONNECTTIMEOUT_MS, configuration.connectTimeoutMilliseconds),
                    cmk_curl_setopt_long(handle, CURLOPT_TIMEOUT_MS, configuration.totalTimeoutMilliseconds),
                    cmk_curl_setopt_long(handle, CURLOPT_TCP_KEEPALIVE, 1),
                    cmk_curl_setopt_long(handle, CURLOPT_SSL_VERIFYPEER, 1),
                    cmk_curl_setopt_long(handle, CURLOPT_SSL_VERIFYHOST, 2),
                    cmk_curl_setopt_pointer(handle, CURLOPT_ERRORBUFFER, errorBuffer),
                    cmk_curl_setopt_function(handle, CURLOPT_WRITEFUNCTION, writeBody),
                    cmk_curl_setopt_pointer(handle, CURLOPT_WRITEDATA, sinkPointer),
                    cmk_curl_setopt_function(handle, CURLOPT_HEADERFUNCTION, writeHeader),
                    cmk_curl_setopt_pointer(handle, CURLOPT_HEADERDATA, sinkPointer),
                    cmk_curl_setopt_pointer(handle, CURLOPT_HTTPHEADER, headerList),
                ]
                if let caFile = configuration.caFile {
                    options.append(cmk_curl_setopt_string(handle, CURLOPT_CAINFO, caFile))
                }
                switch request.method {
                case .get:
                    options.append(cmk_curl_setopt_long(handle, CURLOPT_HTTPGET, 1))
                default:
                    if request.method != .post {
                        options.append(cmk_curl_setopt_string(handle, CURLOPT_CUSTOMREQUEST, request.method.rawValue))
                    }
                    if request.method == .post || request.body != nil {
                        // POSTFIELDS without a copy: curl reads our wiped buffer, which outlives the transfer.
                        options.append(cmk_curl_setopt_long(handle, CURLOPT_POST, 1))
                        options.append(cmk_curl_setopt_offset(handle, CURLOPT_POSTFIELDSIZE_LARGE, curl_off_t(bodyBytes.count)))
                        options.append(cmk_curl_setopt_pointer(handle, CURLOPT_POSTFIELDS,
                                                               UnsafeMutableRawPointer(mutating: bodyBytes.baseAddress ?? UnsafeRawPointer(errorBuffer))))
                    }
                }
                if let failed = options.first(where: { $0 != CURLE_OK }) { return failed }
                return curl_easy_perform(handle)
            }
        }
        // Leaves no pointer to this call's buffers in the handle.
        _ = cmk_curl_setopt_pointer(handle, CURLOPT_POSTFIELDS, nil)
        guard code == CURLE_OK else {
            if sink.overflowed { throw .responseTooLarge(url: request.url, limit: configuration.maxResponseBytes) }
            throw classify(code, url: request.url)
        }
        var status = 0
        _ = cmk_curl_getinfo_long(handle, CURLINFO_RESPONSE_CODE, &status)
        var connects = 0
        _ = cmk_curl_getinfo_long(handle, CURLINFO_NUM_CONNECTS, &connects)
        return HTTPResponse(status: status, headers: sink.headers, body: sink.body, connectionReused: connects == 0)
    }

    private func classify(_ code: CURLcode, url: String) -> HTTPError {
        let detail = errorBuffer[0] != 0 ? String(cString: errorBuffer) : String(cString: curl_easy_strerror(code))
        let number = Int(code.rawValue)
        switch code {
        case CURLE_COULDNT_RESOLVE_HOST, CURLE_COULDNT_RESOLVE_PROXY:
            return .resolveFailed(url: url, curlCode: number, message: detail)
        case CURLE_COULDNT_CONNECT:
            return .connectFailed(url: url, curlCode: number, message: detail)
        case CURLE_OPERATION_TIMEDOUT:
            return .timedOut(url: url, curlCode: number, message: detail)
        case CURLE_SSL_CONNECT_ERROR, CURLE_PEER_FAILED_VERIFICATION, CURLE_SSL_CERTPROBLEM, CURLE_SSL_CIPHER,
             CURLE_SSL_CACERT_BADFILE, CURLE_SSL_ISSUER_ERROR, CURLE_SSL_PINNEDPUBKEYNOTMATCH, CURLE_SSL_INVALIDCERTSTATUS,
             CURLE_SSL_ENGINE_NOTFOUND, CURLE_SSL_ENGINE_SETFAILED, CURLE_SSL_CRL_BADFILE, CURLE_SSL_SHUTDOWN_FAILED:
            return .tlsFailed(url: url, curlCode: number, message: detail)
        case CURLE_UNSUPPORTED_PROTOCOL, CURLE_URL_MALFORMAT:
            return .invalidRequest("\(url): \(detail)")
        default:
            return .transferFailed(url: url, curlCode: number, message: detail)
        }
    }
}
