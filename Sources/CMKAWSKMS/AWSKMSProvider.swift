import Foundation
import Synchronization
import CMKCrypto
import CMKKeys

/// One HTTP answer as the provider needs it.
public struct AWSKMSResponse: Sendable {
    public let status: Int
    /// Header fields, names lower-cased.
    public let headers: [(name: String, value: String)]
    public let body: [UInt8]
    public init(status: Int, headers: [(name: String, value: String)], body: [UInt8]) {
        self.status = status
        self.headers = headers
        self.body = body
    }
}

/// How the provider sends a signed request: the shared HTTP client (CMKHTTP) in production.
/// Throws a message when no answer came (refused, timed out, TLS failed): that is "unavailable".
public protocol AWSKMSTransport: Sendable {
    func post(url: String, headers: [(name: String, value: String)], body: [UInt8]) throws(AWSKMSTransportError) -> AWSKMSResponse
}

/// No HTTP answer at all, with what the HTTP layer saw.
public struct AWSKMSTransportError: Error, Sendable {
    public let message: String
    public init(_ message: String) { self.message = message }
}

/// A `KeyProvider` over AWS KMS (the JSON 1.1 API, Signature Version 4).
///
/// A cmkfs master-key version is not a key of its own here: every version is the one KMS key
/// (`keyID`: id, ARN or alias), and the version number is bound into each EDEK's
/// EncryptionContext (`cmkfs:key-version`) beside the volume and file ids. AWS rotates the key's
/// material itself and keeps every earlier material, so old EDEKs stay decryptable; `cmkfs key
/// rotate` re-encrypts every EDEK under the next version (and so under the key's current
/// material). Disabling or destroying a version therefore acts on the whole KMS key
/// (`versionsAreSeparateKeys` is false), and `key purge` never schedules the key's deletion.
///
/// DisabledException, KMSInvalidStateException and AccessDeniedException are the key owner's
/// kill switch (`.keyDisabled`, `.keyDestroyed` while the key is pending deletion,
/// `.accessDenied` for a withdrawn permission);
/// throttling and server errors are retried with jittered exponential backoff; no answer is
/// `.unavailable`. `state(of:)` asks DescribeKey, which the lease renewal calls, because some
/// KMS implementations keep decrypting for a disabled key.
public final class AWSKMSProvider: KeyProvider {
    public var kind: String { "aws-kms" }
    public var versionsAreSeparateKeys: Bool { false }
    public let region: String
    public let endpoint: String
    public let credentials: AWSCredentials
    let transport: any AWSKMSTransport
    let signer: SigV4Signer
    let host: String
    let clock: @Sendable () -> Int
    /// Throttling and 5xx answers: attempts in all, and the first backoff.
    let attempts: Int
    let backoffMilliseconds: Int
    /// The newest version asked about per key id: `createVersion` returns the next one.
    private let newest = Mutex<[String: Int]>([:])
    /// The `x-amzn-RequestId` of the latest answer, to join cmkfs' audit log to CloudTrail.
    private let requestID = Mutex<String?>(nil)

    /// `endpoint` defaults to `https://kms.<region>.amazonaws.com`.
    public init(region: String, endpoint: String? = nil, credentials: AWSCredentials, transport: any AWSKMSTransport,
                attempts: Int = 5, backoffMilliseconds: Int = 50,
                clock: @escaping @Sendable () -> Int = { Int(Date().timeIntervalSince1970) }) throws(KeyProviderError) {
        let url = endpoint ?? "https://kms.\(region).amazonaws.com"
        guard let parts = URLComponents(string: url), let scheme = parts.scheme, ["http", "https"].contains(scheme.lowercased()),
              let hostName = parts.host, !hostName.isEmpty else {
            throw .unavailable("the AWS KMS endpoint \(url) is not an http(s) URL")
        }
        self.region = region
        self.endpoint = url.hasSuffix("/") ? String(url.dropLast()) : url
        self.credentials = credentials
        self.transport = transport
        self.signer = SigV4Signer(region: region, service: "kms")
        self.host = parts.port.map { "\(hostName):\($0)" } ?? hostName
        self.clock = clock
        self.attempts = max(1, attempts)
        self.backoffMilliseconds = backoffMilliseconds
    }

    /// The request id AWS gave the latest answer (CloudTrail's `requestID`), if any.
    public var lastRequestID: String? { requestID.withLock { $0 } }

    /// The EncryptionContext of one EDEK: CloudTrail records it with every Decrypt, so the key
    /// owner sees which volume and file each use was for.
    public static func encryptionContext(_ context: WrapContext, version: Int) -> [(String, String)] {
        [("cmkfs:volume", hex(context.volumeID)), ("cmkfs:file", hex(context.fileID)), ("cmkfs:key-version", String(version))]
    }

    public func createKey() throws(KeyProviderError) -> KeyRef {
        let body = KMSJSON.object([("Description", KMSJSON.quoted("cmkfs master key")), ("KeyUsage", KMSJSON.quoted("ENCRYPT_DECRYPT"))])
        let answer = try call(.createKey, body: body, key: nil)
        guard let meta = json(answer)?["KeyMetadata"] as? [String: Any], let id = meta["KeyId"] as? String else { throw malformed(.createKey) }
        let key = KeyRef(keyID: id, version: 1)
        saw(key)
        return key
    }

    public func createVersion(of keyID: String) throws(KeyProviderError) -> KeyRef {
        let current = KeyRef(keyID: keyID, version: newest.withLock { $0[keyID] } ?? 1)
        switch try state(of: current) {
        case .enabled: break
        case .disabled: throw .keyDisabled(current)
        case .destroyed: throw .keyDestroyed(current)
        }
        let next = KeyRef(keyID: keyID, version: current.version + 1)
        saw(next)
        return next
    }

    public func wrap(_ dek: SecretBytes, with key: KeyRef, context: WrapContext) throws(KeyProviderError) -> [UInt8] {
        saw(key)
        var body = KMSJSON.encryptBody(keyID: key.keyID, plaintext: dek, context: Self.encryptionContext(context, version: key.version))
        defer { body.withUnsafeMutableBytes { secureZero($0) } }
        let answer = try call(.encrypt, body: body, key: key, receipt: context.request?.receipt)
        guard let blob = json(answer)?["CiphertextBlob"] as? String, let edek = KMSJSON.decode(blob), !edek.isEmpty else {
            throw malformed(.encrypt)
        }
        return edek
    }

    public func unwrap(_ edek: [UInt8], with key: KeyRef, context: WrapContext) throws(KeyProviderError) -> SecretBytes {
        saw(key)
        guard !edek.isEmpty else { throw .unwrapFailed(key) }
        let body = KMSJSON.object([("KeyId", KMSJSON.quoted(key.keyID)), ("CiphertextBlob", KMSJSON.base64Literal(edek)),
                                   ("EncryptionContext", KMSJSON.context(Self.encryptionContext(context, version: key.version)))])
        var answer = try call(.decrypt, body: body, key: key, receipt: context.request?.receipt)
        defer { answer.withUnsafeMutableBytes { secureZero($0) } }
        var text = answer.withUnsafeBytes { KMSJSON.stringField("Plaintext", in: $0) } ?? []
        defer { text.withUnsafeMutableBytes { secureZero($0) } }
        guard let dek = KMSJSON.decodeSecret(text) else { throw malformed(.decrypt) }
        return dek
    }

    /// Re-encrypts one EDEK from `from` to `to` inside AWS (`ReEncrypt`): the DEK never leaves
    /// the KMS, unlike a Decrypt and an Encrypt. Needs `kms:ReEncryptFrom` and `kms:ReEncryptTo`.
    public func reEncrypt(_ edek: [UInt8], from: KeyRef, to: KeyRef, context: WrapContext) throws(KeyProviderError) -> [UInt8] {
        saw(to)
        guard !edek.isEmpty else { throw .unwrapFailed(from) }
        let body = KMSJSON.object([
            ("CiphertextBlob", KMSJSON.base64Literal(edek)), ("SourceKeyId", KMSJSON.quoted(from.keyID)),
            ("SourceEncryptionContext", KMSJSON.context(Self.encryptionContext(context, version: from.version))),
            ("DestinationKeyId", KMSJSON.quoted(to.keyID)),
            ("DestinationEncryptionContext", KMSJSON.context(Self.encryptionContext(context, version: to.version))),
        ])
        let answer = try call(.reEncrypt, body: body, key: from, receipt: context.request?.receipt)
        guard let blob = json(answer)?["CiphertextBlob"] as? String, let out = KMSJSON.decode(blob), !out.isEmpty else {
            throw malformed(.reEncrypt)
        }
        return out
    }

    public func state(of key: KeyRef) throws(KeyProviderError) -> ProviderKeyState {
        saw(key)
        let answer = try call(.describeKey, body: KMSJSON.object([("KeyId", KMSJSON.quoted(key.keyID))]), key: key)
        guard let meta = json(answer)?["KeyMetadata"] as? [String: Any], let state = meta["KeyState"] as? String else {
            throw malformed(.describeKey)
        }
        switch state {
        case "Enabled": return .enabled
        case "PendingDeletion", "PendingReplicaDeletion": return .destroyed
        default: return .disabled  // Disabled, PendingImport, Unavailable, Creating, Updating
        }
    }

    public func setState(_ state: ProviderKeyState, of key: KeyRef) throws(KeyProviderError) {
        let id = KMSJSON.object([("KeyId", KMSJSON.quoted(key.keyID))])
        switch state {
        case .enabled:
            // EnableKey on a key pending deletion fails; say it is destroyed, as cmkfs sees it.
            if try self.state(of: key) == .destroyed { throw .keyDestroyed(key) }
            _ = try call(.enableKey, body: id, key: key)
        case .disabled:
            _ = try call(.disableKey, body: id, key: key)
        case .destroyed:
            // The shortest window AWS allows; the key owner can still cancel it (the key then
            // comes back disabled), which cmkfs cannot prevent and does not hide.
            _ = try call(.scheduleKeyDeletion, body: KMSJSON.object([("KeyId", KMSJSON.quoted(key.keyID)), ("PendingWindowInDays", Array("7".utf8))]), key: key)
        }
    }

    // MARK: private

    private func saw(_ key: KeyRef) {
        newest.withLock { $0[key.keyID] = max($0[key.keyID] ?? 0, key.version) }
    }

    private func json(_ bytes: [UInt8]) -> [String: Any]? {
        (try? JSONSerialization.jsonObject(with: Data(bytes))) as? [String: Any]
    }

    private func malformed(_ op: KMSJSON.Operation) -> KeyProviderError {
        .unavailable("AWS KMS at \(endpoint) sent a malformed \(op.rawValue) answer")
    }

    /// One signed call; retries throttling and server errors, maps refusals. AWS's request id
    /// (`x-amzn-RequestId`, CloudTrail's `requestID`) of the last attempt goes to `receipt`, so
    /// cmkfs' audit record of the key use names it (`kms_server_request`).
    func call(_ op: KMSJSON.Operation, body: [UInt8], key: KeyRef?, receipt: KeyRequestReceipt? = nil) throws(KeyProviderError) -> [UInt8] {
        var attempt = 0
        while true {
            attempt += 1
            let request = SigV4Request(method: "POST", path: "/", headers: [
                (name: "Host", value: host), (name: "Content-Type", value: "application/x-amz-json-1.1"),
                (name: "X-Amz-Target", value: op.target),
            ], body: body)
            let signed: SigV4Signature
            do { signed = try signer.sign(request, credentials: credentials, date: clock()) } catch {
                throw .unavailable("cannot sign the AWS KMS request: \(error)")
            }
            let response: AWSKMSResponse
            do { response = try transport.post(url: endpoint + "/", headers: signed.headers, body: body) } catch {
                throw .unavailable("AWS KMS at \(endpoint) is unreachable: \(error.message)")
            }
            if let id = response.headers.first(where: { $0.name == "x-amzn-requestid" })?.value {
                requestID.withLock { $0 = id }
                receipt?.record(serverRequestID: id)
            }
            if response.status == 200 { return response.body }
            let (type, message) = KMSJSON.error(status: response.status, headers: response.headers, body: response.body)
            let retryable = type == "ThrottlingException" || type == "LimitExceededException" || response.status >= 500
            if retryable, attempt < attempts {
                // Full jitter: a random wait up to the doubled backoff, so many callers spread out.
                let ceiling = backoffMilliseconds << (attempt - 1)
                usleep(UInt32(Int.random(in: ceiling / 2...ceiling) * 1000))
                continue
            }
            throw refusal(type: type, message: message, status: response.status, key: key, retried: retryable ? attempt : 0)
        }
    }

    func refusal(type: String, message: String, status: Int, key: KeyRef?, retried: Int) -> KeyProviderError {
        let key = key ?? KeyRef(keyID: "?", version: 0)
        let said = message.isEmpty ? type : "\(type): \(message)"
        switch type {
        case "DisabledException":
            return .keyDisabled(key)
        case "AccessDeniedException":
            // The key owner withdrew this principal's permission (key policy, IAM, grant).
            return .accessDenied(key, detail: "AWS KMS at \(endpoint) says \(said)")
        case "KMSInvalidStateException":
            let lower = message.lowercased()
            return lower.contains("pending deletion") || lower.contains("pendingdeletion") ? .keyDestroyed(key) : .keyDisabled(key)
        case "NotFoundException":
            return .keyNotFound(key, detail: "AWS KMS at \(endpoint) says \(said)")
        case "InvalidCiphertextException", "IncorrectKeyException":
            return .unwrapFailed(key)
        case "UnrecognizedClientException", "InvalidSignatureException", "IncompleteSignature", "MissingAuthenticationToken",
             "ExpiredTokenException", "InvalidClientTokenId", "SignatureDoesNotMatch", "AuthFailure":
            return .unavailable("AWS KMS at \(endpoint) rejected the credentials (\(said)); they were \(credentials): "
                                + "check the access key, its secret and session token, and the region")
        default:
            if retried > 0 { return .unavailable("AWS KMS at \(endpoint) still answered \(said) after \(retried) attempts") }
            return .unavailable("AWS KMS at \(endpoint) answered HTTP \(status) \(said)")
        }
    }
}

func hex(_ bytes: [UInt8]) -> String { SigV4Signer.hex(bytes) }
