import CMKCrypto

/// Where a volume's transit key lives and how to reach it. Recorded in the volume (all but the
/// token, which is given at each run: `--vault-token-file` or `VAULT_TOKEN`).
public struct VaultSettings: Sendable, Equatable {
    /// The server's base URL, `https://vault.example:8200` (http only for a local test server).
    public var address: String
    /// The transit secrets engine's mount path (`transit`).
    public var mount: String
    /// The Vault Enterprise / OpenBao namespace, sent as `X-Vault-Namespace`, or nil.
    public var namespace: String?
    /// A PEM file of CAs to trust for the server's certificate instead of the system's.
    public var caFile: String?
    /// The mount path of a KV version 2 engine that keeps the volume's audit anchor, or nil for
    /// none (`VaultTransitProvider+Anchor.swift`).
    public var kvMount: String?
    /// Deadlines of one request (connect, and whole request).
    public var connectTimeoutMilliseconds: Int
    public var timeoutMilliseconds: Int

    public init(address: String, mount: String = "transit", namespace: String? = nil, caFile: String? = nil,
                connectTimeoutMilliseconds: Int = 2_000, timeoutMilliseconds: Int = 5_000, kvMount: String? = nil) {
        var address = address
        while address.hasSuffix("/") { address.removeLast() }
        var mount = mount
        while mount.hasPrefix("/") { mount.removeFirst() }
        while mount.hasSuffix("/") { mount.removeLast() }
        self.address = address
        self.mount = mount
        self.namespace = namespace
        self.caFile = caFile
        var kv = kvMount
        while kv?.hasPrefix("/") == true { kv?.removeFirst() }
        while kv?.hasSuffix("/") == true { kv?.removeLast() }
        self.kvMount = kv
        self.connectTimeoutMilliseconds = connectTimeoutMilliseconds
        self.timeoutMilliseconds = timeoutMilliseconds
    }

    /// Why these settings cannot be used, or nil: an address that is not http(s), a mount or key
    /// name with characters a URL path would change.
    public func problem(keyName: String) -> String? {
        let lower = address.lowercased()
        guard lower.hasPrefix("https://") || lower.hasPrefix("http://"), address.count > 8 else {
            return "the Vault address \(address) is not an http:// or https:// URL"
        }
        guard !address.contains(where: { $0 == " " || $0.isNewline || $0 == "?" || $0 == "#" }) else {
            return "the Vault address \(address) contains a space, '?' or '#'"
        }
        guard Self.isPathSafe(mount, slashes: true) else { return "the transit mount path '\(mount)' has characters other than A-Z a-z 0-9 . _ - /" }
        guard Self.isPathSafe(keyName, slashes: false) else { return "the transit key name '\(keyName)' has characters other than A-Z a-z 0-9 . _ -" }
        if let kvMount, !Self.isPathSafe(kvMount, slashes: true) { return "the KV mount path '\(kvMount)' has characters other than A-Z a-z 0-9 . _ - /" }
        if let namespace, !Self.isPathSafe(namespace, slashes: true) { return "the Vault namespace '\(namespace)' has characters other than A-Z a-z 0-9 . _ - /" }
        return nil
    }

    /// Whether `s` can go into a URL path as it is: A-Z a-z 0-9 . _ - (and / with `slashes`), no `.`, `..` or `//`.
    public static func isPathSafe(_ s: String, slashes: Bool) -> Bool {
        !s.isEmpty && s != "." && s != ".." && !s.contains("//") && s.unicodeScalars.allSatisfy { c in
            (c >= "a" && c <= "z") || (c >= "A" && c <= "Z") || (c >= "0" && c <= "9") || c == "." || c == "_" || c == "-" || (slashes && c == "/")
        }
    }
}
