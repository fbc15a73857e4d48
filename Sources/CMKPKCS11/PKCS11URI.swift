/// A `pkcs11:` URI (RFC 7512): what identifies a token, an object in it, the module to load and
/// where the PIN comes from, e.g.
/// `pkcs11:token=cmkfs;object=mk-prod?module-name=softhsm2&pin-source=file:/etc/cmkfs/pin`.
///
/// Attribute values are percent-decoded; `id` (and any value) may be binary, so every value is
/// kept as bytes with a `String` view for the textual ones. An attribute RFC 7512 does not define
/// is refused with its name (a typo such as `tokn=` must not select "any token"), and so is one
/// given twice.
public struct PKCS11URI: Sendable, Equatable {
    /// The path attributes (`token`, `object`, `type`, `id`, …) by name, decoded.
    public private(set) var path: [String: [UInt8]] = [:]
    /// The query attributes (`module-name`, `module-path`, `pin-source`, `pin-value`), decoded.
    public private(set) var query: [String: [UInt8]] = [:]

    /// RFC 7512 §2.3, path component.
    public static let pathAttributes: Set<String> = [
        "id", "library-description", "library-manufacturer", "library-version", "manufacturer", "model",
        "object", "serial", "slot-description", "slot-id", "slot-manufacturer", "token", "type",
    ]
    /// RFC 7512 §2.3, query component.
    public static let queryAttributes: Set<String> = ["pin-source", "pin-value", "module-name", "module-path"]
    /// `type=` values (RFC 7512 §2.3).
    public static let objectTypes: Set<String> = ["public", "private", "cert", "secret-key", "data"]

    public init(parsing text: String) throws(PKCS11URIError) {
        let bytes = Array(text.utf8)
        let scheme = Array("pkcs11:".utf8)
        guard bytes.count >= scheme.count, bytes[..<scheme.count].map({ $0 | 0x20 }) == scheme.map({ $0 | 0x20 }) else {
            throw .notPKCS11URI
        }
        let rest = bytes[scheme.count...]
        let question = rest.firstIndex(of: UInt8(ascii: "?"))
        let pathPart = rest[..<(question ?? rest.endIndex)]
        let queryPart = question.map { rest[($0 + 1)...] } ?? []
        if rest.contains(UInt8(ascii: "#")) { throw .malformed("a fragment (#) is not part of a pkcs11: URI") }
        for item in pathPart.split(separator: UInt8(ascii: ";"), omittingEmptySubsequences: true) {
            let (name, value) = try Self.attribute(item, allowed: Self.pathAttributes, component: "path")
            guard path[name] == nil else { throw .duplicate(name) }
            path[name] = value
        }
        for item in queryPart.split(separator: UInt8(ascii: "&"), omittingEmptySubsequences: true) {
            let (name, value) = try Self.attribute(item, allowed: Self.queryAttributes, component: "query")
            guard query[name] == nil else { throw .duplicate(name) }
            query[name] = value
        }
        if let type = self.type, !Self.objectTypes.contains(type) {
            throw .malformed("type=\(type) is not one of \(Self.objectTypes.sorted().joined(separator: ", "))")
        }
        if query["module-name"] != nil && query["module-path"] != nil {
            throw .malformed("give the module once: module-name or module-path, not both")
        }
        if query["pin-source"] != nil && query["pin-value"] != nil {
            throw .malformed("give the PIN once: pin-source or pin-value, not both")
        }
    }

    /// One `name=value` attribute of the component; the value percent-decoded.
    private static func attribute(_ item: ArraySlice<UInt8>, allowed: Set<String>,
                                  component: String) throws(PKCS11URIError) -> (String, [UInt8]) {
        guard let equals = item.firstIndex(of: UInt8(ascii: "=")) else {
            throw .malformed("'\(String(decoding: item, as: UTF8.self))' is not name=value")
        }
        let name = String(decoding: item[..<equals], as: UTF8.self)
        guard allowed.contains(name) else {
            let other = component == "path" ? queryAttributes : pathAttributes
            throw .unknownAttribute(name, component: component, belongsInOther: other.contains(name))
        }
        return (name, try percentDecode(item[(equals + 1)...], attribute: name))
    }

    /// `%XX` to its byte; any other byte kept. A `%` not followed by two hex digits is an error.
    static func percentDecode(_ bytes: ArraySlice<UInt8>, attribute: String) throws(PKCS11URIError) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count)
        var i = bytes.startIndex
        while i < bytes.endIndex {
            let b = bytes[i]
            if b == UInt8(ascii: "%") {
                guard i + 2 < bytes.endIndex, let hi = hexValue(bytes[i + 1]), let lo = hexValue(bytes[i + 2]) else {
                    throw .malformed("\(attribute): '%' must be followed by two hex digits")
                }
                out.append(hi << 4 | lo)
                i += 3
            } else {
                out.append(b)
                i += 1
            }
        }
        return out
    }

    private static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
        default: nil
        }
    }

    /// A path attribute as text (nil when absent or not UTF-8).
    public func string(_ name: String) -> String? { path[name].flatMap { String(validating: $0, as: UTF8.self) } }
    /// A query attribute as text (nil when absent or not UTF-8).
    public func queryString(_ name: String) -> String? { query[name].flatMap { String(validating: $0, as: UTF8.self) } }

    /// `token=`: the token label.
    public var token: String? { string("token") }
    /// `object=`: the object label.
    public var object: String? { string("object") }
    /// `type=`.
    public var type: String? { string("type") }
    /// `module-name=`: a module by name (p11-kit's registry, or `lib<name>.so`).
    public var moduleName: String? { queryString("module-name") }
    /// `module-path=`: a module by path.
    public var modulePath: String? { queryString("module-path") }
    /// `pin-source=`: where the PIN is (`file:/path` or a path); the file itself is read by the caller.
    public var pinSource: String? { queryString("pin-source") }

    /// The file `pin-source` names: `file:` URIs (`file:/p`, `file:///p`) and absolute paths.
    public var pinFile: String? {
        get throws(PKCS11URIError) {
            guard let source = pinSource else { return nil }
            if source.hasPrefix("file://") {
                let rest = source.dropFirst("file://".count)
                guard rest.hasPrefix("/") else { throw .malformed("pin-source=\(source): only local files (file:///path) are read") }
                return String(rest)
            }
            if source.hasPrefix("file:") { return String(source.dropFirst("file:".count)) }
            if source.hasPrefix("/") { return source }
            throw .malformed("pin-source=\(source): give a file, e.g. pin-source=file:/etc/cmkfs/token.pin")
        }
    }
}

/// Why a `pkcs11:` URI was refused.
public enum PKCS11URIError: Error, Equatable, CustomStringConvertible {
    case notPKCS11URI
    /// An attribute RFC 7512 does not define, in the component it was found in.
    case unknownAttribute(String, component: String, belongsInOther: Bool)
    case duplicate(String)
    case malformed(String)

    public var description: String {
        switch self {
        case .notPKCS11URI: "not a pkcs11: URI (RFC 7512), e.g. pkcs11:token=NAME;object=LABEL?module-name=softhsm2"
        case .unknownAttribute(let name, let component, let misplaced):
            misplaced ? "pkcs11: URI attribute '\(name)' belongs in the \(component == "path" ? "query (after ?)" : "path (before ?)")"
                : "unknown pkcs11: URI attribute '\(name)' (\(component): "
                + (component == "path" ? PKCS11URI.pathAttributes : PKCS11URI.queryAttributes).sorted().joined(separator: ", ") + ")"
        case .duplicate(let name): "pkcs11: URI attribute '\(name)' is given twice"
        case .malformed(let why): "malformed pkcs11: URI: \(why)"
        }
    }
}
