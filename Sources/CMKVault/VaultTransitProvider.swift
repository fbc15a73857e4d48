import Foundation
import CMKCrypto
import CMKHTTP
import CMKKeys

/// Master keys in a HashiCorp Vault or OpenBao transit secrets engine (the same API).
///
/// A master key is a transit key created with `derived=true`; a cmkfs version is the transit
/// key's version. Wrap is `encrypt` with `key_version`, unwrap is `decrypt`, both with a
/// `context` binding the volume and file ids, so Vault derives a key per file (HKDF) and an EDEK
/// moved to another file or volume does not decrypt; rotation's rewrap is the server-side
/// `rewrap` batch endpoint, so DEKs never leave Vault while a rotation runs
/// (docs/key-hierarchy.md says why derived keys rather than associated data).
///
/// An EDEK is Vault's ciphertext string (`vault:v<N>:<base64>`) as bytes. Transit has no
/// per-version disable flag: a version is *disabled* when it is below the key's
/// `min_decryption_version` (and `min_encryption_version`), and *destroyed* when trimmed below
/// `min_available_version`. Both are thresholds, so they apply to every older version as well.
/// A refused token (403: wrong, revoked, expired, or its policy no longer allows the call) is
/// `.accessDenied`: the customer's kill switch as much as a disabled key, and said as what it is.
public final class VaultTransitProvider: KeyProvider {
    public var kind: String { "vault" }
    public let settings: VaultSettings
    /// The transit key `createKey` makes or adopts.
    public let keyName: String
    private let client: VaultClient

    /// A provider for key `keyName` at `settings`, authenticating with `token`.
    public init(settings: VaultSettings, keyName: String, token: SecretBytes) throws(KeyProviderError) {
        if let problem = settings.problem(keyName: keyName) { throw .unavailable(problem) }
        self.settings = settings
        self.keyName = keyName
        client = VaultClient(settings: settings, token: token)
    }

    /// The server, for messages ("Vault at https://…").
    public var place: String { "Vault at \(settings.address)" }

    // MARK: Keys and versions

    /// Adopts transit key `keyName` if it exists (it must be a derived key), else creates it
    /// (`derived=true`, aes256-gcm96). Returns its newest version.
    public func createKey() throws(KeyProviderError) -> KeyRef {
        let probe = KeyRef(keyID: keyName, version: 1)
        let existing = try call(.get, "keys/\(keyName)", key: probe, op: "key-read")
        switch existing.status {
        case 200:
            guard existing.data?["derived"] as? Bool == true else {
                throw .unavailable("transit key \(keyName) in \(place) was not created with derived=true, which cmkfs needs to bind each EDEK to its file; create a new key (cmkfs init makes one when the name is free)")
            }
            return KeyRef(keyID: keyName, version: try Self.int(existing.data?["latest_version"], "latest_version"))
        case 404:
            let made = try call(.post, "keys/\(keyName)", body: VaultClient.json(["derived": true, "type": "aes256-gcm96"]),
                                key: probe, op: "key-create")
            guard (200..<300).contains(made.status) else { throw refusal(made, key: probe, doing: "create transit key \(keyName)") }
            return KeyRef(keyID: keyName, version: 1)
        default:
            throw refusal(existing, key: probe, doing: "read transit key \(keyName)")
        }
    }

    /// Rotates the transit key: a new newest version, returned.
    public func createVersion(of keyID: String) throws(KeyProviderError) -> KeyRef {
        let probe = KeyRef(keyID: keyID, version: 1)
        let rotated = try call(.post, "keys/\(keyID)/rotate", body: VaultClient.json([:]), key: probe, op: "key-rotate")
        guard (200..<300).contains(rotated.status) else { throw refusal(rotated, key: probe, doing: "rotate transit key \(keyID)") }
        return KeyRef(keyID: keyID, version: try keyInfo(keyID).latest)
    }

    /// What the transit key's configuration says about its versions.
    struct KeyInfo {
        var latest: Int
        var minDecryption: Int
        var minEncryption: Int
        var minAvailable: Int
    }

    func keyInfo(_ keyID: String) throws(KeyProviderError) -> KeyInfo {
        let probe = KeyRef(keyID: keyID, version: 1)
        let answer = try call(.get, "keys/\(keyID)", key: probe, op: "key-read")
        if answer.status == 404 { throw .keyNotFound(probe, detail: "\(place) has no transit key \(keyID) under \(settings.mount)/") }
        guard answer.status == 200, let data = answer.data else { throw refusal(answer, key: probe, doing: "read transit key \(keyID)") }
        return KeyInfo(latest: try Self.int(data["latest_version"], "latest_version"),
                       minDecryption: (try? Self.int(data["min_decryption_version"], "")) ?? 1,
                       minEncryption: (try? Self.int(data["min_encryption_version"], "")) ?? 0,
                       minAvailable: (try? Self.int(data["min_available_version"], "")) ?? 0)
    }

    public func state(of key: KeyRef) throws(KeyProviderError) -> ProviderKeyState {
        let info = try keyInfo(key.keyID)
        guard key.version >= 1, key.version <= info.latest else {
            throw .keyNotFound(key, detail: "transit key \(key.keyID) in \(place) has versions 1 to \(info.latest)")
        }
        if key.version < info.minAvailable { return .destroyed }
        if key.version < info.minDecryption || key.version < info.minEncryption { return .disabled }
        return .enabled
    }

    /// enabled: lowers the thresholds to `key`'s version; disabled: raises them past it (rotating
    /// once first when it is the newest version, since a threshold cannot pass the newest);
    /// destroyed: the same, then trims every version below the threshold for good.
    public func setState(_ state: ProviderKeyState, of key: KeyRef) throws(KeyProviderError) {
        var info = try keyInfo(key.keyID)
        guard key.version >= 1, key.version <= info.latest else {
            throw .keyNotFound(key, detail: "transit key \(key.keyID) in \(place) has versions 1 to \(info.latest)")
        }
        if key.version < info.minAvailable {
            if state == .destroyed { return }
            throw .keyDestroyed(key)
        }
        switch state {
        case .enabled:
            var changes: [String: Any] = [:]
            if info.minDecryption > key.version { changes["min_decryption_version"] = key.version }
            if info.minEncryption > key.version { changes["min_encryption_version"] = key.version }
            if !changes.isEmpty { try configure(key, changes) }
        case .disabled, .destroyed:
            if key.version == info.latest {
                _ = try createVersion(of: key.keyID)
                info = try keyInfo(key.keyID)
            }
            let floor = key.version + 1
            var changes: [String: Any] = [:]
            if info.minDecryption < floor { changes["min_decryption_version"] = floor }
            if info.minEncryption < floor { changes["min_encryption_version"] = floor }
            if !changes.isEmpty { try configure(key, changes) }
            if state == .destroyed {
                let trimmed = try call(.post, "keys/\(key.keyID)/trim", body: VaultClient.json(["min_available_version": floor]),
                                       key: key, op: "key-trim")
                guard (200..<300).contains(trimmed.status) else { throw refusal(trimmed, key: key, doing: "trim transit key \(key.keyID)") }
            }
        }
    }

    private func configure(_ key: KeyRef, _ changes: [String: Any]) throws(KeyProviderError) {
        let answer = try call(.post, "keys/\(key.keyID)/config", body: VaultClient.json(changes), key: key, op: "key-config")
        guard (200..<300).contains(answer.status) else { throw refusal(answer, key: key, doing: "configure transit key \(key.keyID)") }
    }

    // MARK: Wrap and unwrap

    public func wrap(_ dek: SecretBytes, with key: KeyRef, context: WrapContext) throws(KeyProviderError) -> [UInt8] {
        // {"context":"…","key_version":N,"plaintext":"<the DEK>"}, built in a wiped buffer.
        let body = HTTPBody(capacity: 160)
        body.append(Array("{\"context\":\"\(Self.derivationContext(context))\",\"key_version\":\(key.version),\"plaintext\":\"".utf8))
        dek.withUnsafeBytes { Base64.append($0, to: body) }
        body.append(Array("\"}".utf8))
        let answer = try call(.post, "encrypt/\(key.keyID)", body: body, key: key, op: "wrap", context: context)
        guard answer.status == 200 else { throw try classify(answer, key: key, doing: "encrypt") }
        guard let ciphertext = answer.data?["ciphertext"] as? String, Self.version(of: Array(ciphertext.utf8)) == key.version else {
            throw .unavailable("\(place) answered an encrypt under \(key) without a ciphertext of that version")
        }
        return Array(ciphertext.utf8)
    }

    public func unwrap(_ edek: [UInt8], with key: KeyRef, context: WrapContext) throws(KeyProviderError) -> SecretBytes {
        // The version is in the ciphertext, and Vault would decrypt any version it has: an EDEK
        // that does not carry the version its row names is refused here.
        guard Self.version(of: edek) == key.version, let ciphertext = String(validating: edek, as: UTF8.self) else {
            throw try refusedLocally(key)
        }
        let body = VaultClient.json(["ciphertext": ciphertext, "context": Self.derivationContext(context)])
        let answer = try call(.post, "decrypt/\(key.keyID)", body: body, key: key, op: "unwrap", context: context)
        guard answer.status == 200 else { throw try classify(answer, key: key, doing: "decrypt") }
        guard let dek = VaultClient.secretField("plaintext", in: answer.body) else {
            throw .unavailable("\(place) answered a decrypt under \(key) without a plaintext")
        }
        return dek
    }

    /// The derivation context of a wrap: a label and the volume and file ids, length-prefixed,
    /// base64. The key version is not in it (unlike `WrapContext.associatedData`): `rewrap`
    /// keeps the context while the version changes, and the ciphertext names its version.
    static func derivationContext(_ context: WrapContext) -> String {
        var bytes = Array("cmkfs.vault.v1".utf8)
        bytes += [UInt8(context.volumeID.count)] + context.volumeID + [UInt8(context.fileID.count)] + context.fileID
        return Base64.encode(bytes)
    }

    /// N of an EDEK `vault:vN:…`, or nil when it is not of that shape.
    static func version(of edek: [UInt8]) -> Int? {
        let prefix = Array("vault:v".utf8)
        guard edek.count > prefix.count + 2, Array(edek[0..<prefix.count]) == prefix,
              let colon = edek[prefix.count...].firstIndex(of: UInt8(ascii: ":")), colon > prefix.count, colon - prefix.count <= 9,
              let n = Int(String(decoding: edek[prefix.count..<colon], as: UTF8.self)), n >= 1 else { return nil }
        return n
    }

    // MARK: Errors

    /// A request, with the HTTP layer's failures as `.unavailable` naming the server.
    func call(_ method: HTTPMethod, _ path: String, body: HTTPBody? = nil, key: KeyRef, op: String,
              context: WrapContext? = nil, mount: String? = nil) throws(KeyProviderError) -> VaultAnswer {
        var headers = [("Op", op)]
        if let context {
            headers.append(("Volume", hexString(context.volumeID)))
            if !context.fileID.isEmpty { headers.append(("File", hexString(context.fileID))) }
            headers += Self.requestHeaders(context.request)
        }
        do {
            let answer = try client.call(method, path, body: body, mount: mount, context: headers)
            // Vault's own name for the request, which its audit device records as request.id.
            if let id = answer.requestID { context?.request?.receipt.record(serverRequestID: id) }
            // Sealed, standby without forwarding, overloaded: an outage, not an answer about the key.
            if answer.status == 503 || answer.status == 429 || answer.status >= 500 {
                throw KeyProviderError.unavailable("\(place) answered \(answer.status): \(answer.errors)")
            }
            return answer
        } catch let error as KeyProviderError {
            throw error
        } catch {
            throw .unavailable("\(place): \(error)")
        }
    }

    /// The request context (docs/key-hierarchy.md, "Request context") as `X-Cmkfs-*` headers,
    /// which Vault's audit device records once configured to (docs/operator-guide.md). Values are
    /// percent-encoded outside A-Z a-z 0-9 - . _ ~, so a process name or reason can never break a
    /// header (or a request).
    static func requestHeaders(_ request: KeyRequest?) -> [(String, String)] {
        guard let request else { return [] }
        var headers = [("Request", request.id), ("Operation", request.operation), ("Host", request.host)]
        if let uid = request.uid { headers.append(("Uid", String(uid))) }
        if let pid = request.pid { headers.append(("Pid", String(pid))) }
        if let process = request.process { headers.append(("Process", process)) }
        if let reason = request.reason { headers.append(("Reason", reason)) }
        return headers.map { ($0.0, percentEncoded($0.1)) }
    }

    static func percentEncoded(_ value: String) -> String {
        var out = ""
        for byte in value.utf8 {
            let c = Character(Unicode.Scalar(byte))
            if byte < 0x80, c.isLetter || c.isNumber || c == "-" || c == "." || c == "_" || c == "~" {
                out.append(c)
            } else {
                out += String(format: "%%%02X", byte)
            }
        }
        return out
    }

    /// What a refused encrypt or decrypt means. An authentication failure or a malformed
    /// ciphertext is this EDEK's fault; anything else is decided by the key's state, asked once.
    private func classify(_ answer: VaultAnswer, key: KeyRef, doing: String) throws(KeyProviderError) -> KeyProviderError {
        if answer.status == 403 { return denied(answer, key: key, doing: doing) }
        let why = answer.errors
        if answer.status == 400, why.contains("message authentication failed") || why.contains("invalid ciphertext") {
            return .unwrapFailed(key)
        }
        if answer.status == 400, why.contains("encryption key not found") {
            return .keyNotFound(key, detail: "\(place) has no transit key \(key.keyID) under \(settings.mount)/")
        }
        switch try state(of: key) {
        case .disabled: return .keyDisabled(key)
        case .destroyed: return .keyDestroyed(key)
        case .enabled: return .unavailable("\(place) refused to \(doing) under \(key): \(why)")
        }
    }

    /// A 403: Vault refused the token, not the key. It answers the same "permission denied"
    /// for a token that is wrong, expired or revoked and for one whose policy lacks the path
    /// (it does not tell a caller which), so the message names both.
    func denied(_ answer: VaultAnswer, key: KeyRef, doing: String) -> KeyProviderError {
        .accessDenied(key, detail: "\(place) refused the token to \(doing) (\(answer.errors)): the token is invalid, expired or revoked, "
                      + "or its policy does not allow \(settings.mount)/…/\(key.keyID)")
    }

    /// A malformed EDEK, or one of another version: the key's own state decides whether this is
    /// a refusal of the key (unknown, disabled, destroyed) or of this EDEK.
    private func refusedLocally(_ key: KeyRef) throws(KeyProviderError) -> KeyProviderError {
        switch try state(of: key) {
        case .disabled: return .keyDisabled(key)
        case .destroyed: return .keyDestroyed(key)
        case .enabled: return .unwrapFailed(key)
        }
    }

    /// A refused administrative call.
    func refusal(_ answer: VaultAnswer, key: KeyRef, doing: String) -> KeyProviderError {
        if answer.status == 403 { return denied(answer, key: key, doing: doing) }
        if answer.status == 404 { return .keyNotFound(key, detail: "\(place) has no transit key \(key.keyID) under \(settings.mount)/") }
        return .unavailable("\(place) refused to \(doing): \(answer.errors)")
    }

    static func int(_ value: Any?, _ name: String) throws(KeyProviderError) -> Int {
        if let n = value as? Int { return n }
        if let n = value as? NSNumber { return n.intValue }
        if let s = value as? String, let n = Int(s) { return n }
        throw .unavailable("Vault's answer has no \(name)")
    }
}

func hexString(_ bytes: [UInt8]) -> String {
    bytes.map { String(format: "%02x", $0) }.joined()
}
