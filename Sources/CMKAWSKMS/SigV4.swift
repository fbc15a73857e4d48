import Glibc
import CMKCrypto

/// One HTTP request as AWS Signature Version 4 sees it: method, the path (not yet
/// percent-encoded), query parameters (not yet encoded), headers and the body.
public struct SigV4Request: Sendable {
    public var method: String
    public var path: String
    public var query: [(name: String, value: String)]
    public var headers: [(name: String, value: String)]
    public var body: [UInt8]

    public init(method: String, path: String = "/", query: [(name: String, value: String)] = [],
                headers: [(name: String, value: String)] = [], body: [UInt8] = []) {
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
    }
}

/// What signing produced: the headers to send (the caller's, plus `X-Amz-Date`, the session
/// token if any, and `Authorization`) and the intermediate strings, which the tests compare to
/// AWS's published vectors. Holds no secret: the signature is a MAC, safe to log.
public struct SigV4Signature: Sendable {
    public let headers: [(name: String, value: String)]
    public let canonicalRequest: String
    public let stringToSign: String
    public let signedHeaders: String
    public let signature: String
    public var authorization: String { headers.first { $0.name == "Authorization" }?.value ?? "" }
}

/// AWS Signature Version 4 (docs: "Signature Version 4 signing process") over OpenSSL's SHA-256
/// and HMAC-SHA256. The derived signing key is held in `SecretBytes` and wiped after each use.
public struct SigV4Signer: Sendable {
    public let region: String
    public let service: String

    public init(region: String, service: String) {
        self.region = region
        self.service = service
    }

    /// Signs `request` at `date` (seconds since the epoch, UTC). `X-Amz-Date` and, with a session
    /// token, `X-Amz-Security-Token` are added and signed; a `Host` header must already be there.
    public func sign(_ request: SigV4Request, credentials: AWSCredentials, date: Int) throws(CryptoError) -> SigV4Signature {
        let (amzDate, day) = Self.timestamps(date)
        var headers = request.headers.filter { !["x-amz-date", "authorization", "x-amz-security-token"].contains($0.name.lowercased()) }
        headers.append((name: "X-Amz-Date", value: amzDate))
        if let token = credentials.sessionToken { headers.append((name: "X-Amz-Security-Token", value: token)) }
        let (canonical, signed) = try canonicalRequest(request, headers: headers)
        let scope = "\(day)/\(region)/\(service)/aws4_request"
        let stringToSign = "AWS4-HMAC-SHA256\n\(amzDate)\n\(scope)\n\(Self.hex(try SHA256.hash(Array(canonical.utf8))))"
        let key = try signingKey(secret: credentials.secretAccessKey, day: day)
        let signature = Self.hex(try HMACSHA256.mac(key: key, Array(stringToSign.utf8)))
        let authorization = "AWS4-HMAC-SHA256 Credential=\(credentials.accessKeyID)/\(scope), SignedHeaders=\(signed), Signature=\(signature)"
        headers.append((name: "Authorization", value: authorization))
        return SigV4Signature(headers: headers, canonicalRequest: canonical, stringToSign: stringToSign,
                              signedHeaders: signed, signature: signature)
    }

    /// The canonical request over `headers` (all of them signed) and the signed-header list.
    func canonicalRequest(_ request: SigV4Request, headers: [(name: String, value: String)]) throws(CryptoError) -> (String, String) {
        var grouped: [String: [String]] = [:]
        for (name, value) in headers { grouped[name.lowercased(), default: []].append(Self.trimmed(value)) }
        let names = grouped.keys.sorted()
        let headerBlock = names.map { "\($0):\(grouped[$0]!.joined(separator: ","))\n" }.joined()
        let signed = names.joined(separator: ";")
        let query = request.query.map { (Self.encode($0.name, slash: true), Self.encode($0.value, slash: true)) }
            .sorted { $0.0 != $1.0 ? $0.0 < $1.0 : $0.1 < $1.1 }
            .map { "\($0.0)=\($0.1)" }.joined(separator: "&")
        let path = request.path.isEmpty ? "/" : Self.encode(request.path, slash: false)
        let payload = Self.hex(try SHA256.hash(request.body))
        return ([request.method, path, query, headerBlock, signed, payload].joined(separator: "\n"), signed)
    }

    /// kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, day), region), service), "aws4_request").
    func signingKey(secret: SecretBytes, day: String) throws(CryptoError) -> SecretBytes {
        let prefixed = SecretBytes(zeroedCount: 4 + secret.count)
        prefixed.withUnsafeMutableBytes { out in
            out.copyBytes(from: Array("AWS4".utf8))
            secret.withUnsafeBytes { s in UnsafeMutableRawBufferPointer(rebasing: out[4...]).copyMemory(from: s) }
        }
        var key = prefixed
        for part in [day, region, service, "aws4_request"] {
            var mac = try HMACSHA256.mac(key: key, Array(part.utf8))
            key = mac.withUnsafeBytes { SecretBytes(copying: $0) }
            mac.withUnsafeMutableBytes { secureZero($0) }
        }
        return key
    }

    /// `X-Amz-Date` (yyyyMMdd'T'HHmmss'Z') and the scope's day (yyyyMMdd), in UTC.
    static func timestamps(_ seconds: Int) -> (String, String) {
        var t = time_t(seconds), tm = Glibc.tm()
        gmtime_r(&t, &tm)
        func two(_ n: Int32) -> String { n < 10 ? "0\(n)" : "\(n)" }
        let day = "\(tm.tm_year + 1900)\(two(tm.tm_mon + 1))\(two(tm.tm_mday))"
        return ("\(day)T\(two(tm.tm_hour))\(two(tm.tm_min))\(two(tm.tm_sec))Z", day)
    }

    /// A header value as signed: ends trimmed, inner runs of spaces and tabs made one space.
    static func trimmed(_ value: String) -> String {
        value.split(whereSeparator: { $0 == " " || $0 == "\t" }).joined(separator: " ")
    }

    /// RFC 3986 percent-encoding of everything but A-Z a-z 0-9 - . _ ~ (and `/` in a path),
    /// with upper-case hex, over the UTF-8 bytes.
    static func encode(_ text: String, slash: Bool) -> String {
        var out = ""
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                 UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"):
                out.unicodeScalars.append(Unicode.Scalar(byte))
            case UInt8(ascii: "/") where !slash:
                out.append("/")
            default:
                let digits = Array("0123456789ABCDEF".utf8)
                out += "%" + String(decoding: [digits[Int(byte >> 4)], digits[Int(byte & 0xF)]], as: UTF8.self)
            }
        }
        return out
    }

    static func hex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        out.reserveCapacity(bytes.count * 2)
        for b in bytes { out.append(digits[Int(b >> 4)]); out.append(digits[Int(b & 0xF)]) }
        return String(decoding: out, as: UTF8.self)
    }
}
