import Synchronization
import CPKCS11
import CMKCrypto
import CMKKeys

/// A `KeyProvider` over any PKCS#11 token: the master key is an AES-256 secret key generated
/// inside the token (sensitive, never extractable), and wrapping a DEK is a CKM_AES_GCM
/// encryption inside the token with `WrapContext.associatedData(for:)` as the AAD.
///
/// Objects on the token (all private token objects, found by label):
/// - `<key-id>.v<N>`: version N of master key `<key-id>` (CKO_SECRET_KEY, CKK_AES, 32 bytes).
///   Disabled = CKA_ENCRYPT and CKA_DECRYPT false; enabled = both true.
/// - `<key-id>.v<N>.destroyed`: a CKO_DATA tombstone left by destroy (C_DestroyObject), so that a
///   destroyed version is reported as destroyed rather than never-existed.
///
/// EDEK layout: `01` ‖ IV (12 bytes, random) ‖ GCM ciphertext of the DEK (32) ‖ tag (16) = 61 bytes.
public final class PKCS11Provider: KeyProvider {
    public var kind: String { "pkcs11" }
    public let modulePath: String
    public let tokenLabel: String
    private let pool: SessionPool
    /// Object handles of key versions seen so far; guarded by the mutex. A handle that went stale
    /// (destroyed by anyone) is dropped and looked up again.
    private let handles = Mutex<[KeyRef: CK_OBJECT_HANDLE]>([:])
    /// Taken around every object this provider creates or destroys, after a search (`TokenWriteLock`).
    private let writeLock: TokenWriteLock

    static let edekFormat: UInt8 = 1
    static let ivSize = 12
    static let tagSize = 16

    /// Loads `modulePath` (a library path, or a module name in p11-kit's registry:
    /// `PKCS11ModuleRegistry`), finds the token labelled `tokenLabel` and logs in with `pin`.
    public init(modulePath: String, tokenLabel: String, pin: SecretBytes) throws(PKCS11OpenError) {
        self.modulePath = modulePath
        self.tokenLabel = tokenLabel
        writeLock = TokenWriteLock(modulePath: modulePath, tokenLabel: tokenLabel)
        let module = try PKCS11Module.load(try PKCS11ModuleRegistry.system.library(for: modulePath))
        let slot = try module.slot(forToken: tokenLabel)
        pool = SessionPool(module: module, slot: slot)
        do {
            try pool.withSession { (s) throws(PKCS11Failure) in try s.login(pin: pin) }
        } catch {
            if error.function == "C_Login" { throw .login(error, token: tokenLabel) }
            throw .failed(token: tokenLabel, call: error.description)
        }
    }

    /// The token label of a version: `<key-id>.v<N>`.
    public static func label(of key: KeyRef) -> String { "\(key.keyID).v\(key.version)" }

    public func createKey() throws(KeyProviderError) -> KeyRef {
        let suffix: [UInt8]
        do { suffix = try SecureRandom.bytes(6) } catch { throw .unavailable("random number generator failed") }
        return try createKey(named: "cmkfs-" + suffix.map { String($0, radix: 16).leftPadded(2) }.joined())
    }

    /// Creates version 1 of a master key with the id (label stem) `keyID`.
    public func createKey(named keyID: String) throws(KeyProviderError) -> KeyRef {
        let key = KeyRef(keyID: keyID, version: 1)
        let exists = try lookup(key) != nil
        let destroyed = try hasTombstone(key)
        guard !exists, !destroyed else {
            throw .unavailable("token '\(tokenLabel)' already has a key labelled \(Self.label(of: key))")
        }
        try generate(key)
        return key
    }

    public func createVersion(of keyID: String) throws(KeyProviderError) -> KeyRef {
        var version = 1
        while true {
            let candidate = KeyRef(keyID: keyID, version: version)
            if try lookup(candidate) != nil { version += 1; continue }
            if try hasTombstone(candidate) { version += 1; continue }
            break
        }
        guard version > 1 else { throw .keyNotFound(KeyRef(keyID: keyID, version: 1), detail: notFoundDetail(KeyRef(keyID: keyID, version: 1))) }
        let key = KeyRef(keyID: keyID, version: version)
        try generate(key)
        return key
    }

    public func wrap(_ dek: SecretBytes, with key: KeyRef, context: WrapContext) throws(KeyProviderError) -> [UInt8] {
        let iv: [UInt8]
        do { iv = try SecureRandom.bytes(Self.ivSize) } catch { throw .unavailable("random number generator failed") }
        let aad = context.associatedData(for: key)
        let sealed = UnsafeMutableRawBufferPointer.allocate(byteCount: dek.count + Self.tagSize, alignment: 16)
        defer { sealed.deallocate() }
        let written = try withKey(key) { (s, object) throws(PKCS11Failure) in
            try dek.withUnsafeBytes { (d) throws(PKCS11Failure) in
                try s.gcmEncrypt(key: object, iv: iv, aad: aad, plaintext: d, into: sealed)
            }
        }
        guard written == sealed.count else { throw .unavailable("C_Encrypt returned \(written) bytes, expected \(sealed.count)") }
        return [Self.edekFormat] + iv + Array(sealed)
    }

    public func unwrap(_ edek: [UInt8], with key: KeyRef, context: WrapContext) throws(KeyProviderError) -> SecretBytes {
        guard edek.count > 1 + Self.ivSize + Self.tagSize, edek[0] == Self.edekFormat else { throw .unwrapFailed(key) }
        let iv = Array(edek[1...Self.ivSize])
        let sealed = Array(edek[(1 + Self.ivSize)...])
        let aad = context.associatedData(for: key)
        // Decrypted into a scratch buffer as large as the input (some modules want that), wiped after.
        let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: sealed.count, alignment: 16)
        defer { secureZero(scratch); scratch.deallocate() }
        let written: Int
        do {
            written = try withKey(key) { (s, object) throws(PKCS11Failure) in
                try withRawCopy(sealed) { (c) throws(PKCS11Failure) in
                    try s.gcmDecrypt(key: object, iv: iv, aad: aad, ciphertext: UnsafeRawBufferPointer(c), into: scratch)
                }
            }
        }
        guard written == sealed.count - Self.tagSize else { throw .unwrapFailed(key) }
        return SecretBytes(copying: UnsafeRawBufferPointer(rebasing: scratch[0..<written]))
    }

    public func state(of key: KeyRef) throws(KeyProviderError) -> ProviderKeyState {
        guard let object = try lookup(key) else {
            if try hasTombstone(key) { return .destroyed }
            throw .keyNotFound(key, detail: notFoundDetail(key))
        }
        let usable = try call { (s) throws(PKCS11Failure) in
            let encrypt = try s.boolAttribute(object, CKA_ENCRYPT)
            let decrypt = try s.boolAttribute(object, CKA_DECRYPT)
            return encrypt && decrypt
        }
        return usable ? .enabled : .disabled
    }

    public func setState(_ state: ProviderKeyState, of key: KeyRef) throws(KeyProviderError) {
        guard let object = try lookup(key) else {
            if try hasTombstone(key) {
                if state == .destroyed { return }
                throw .keyDestroyed(key)
            }
            throw .keyNotFound(key, detail: notFoundDetail(key))
        }
        switch state {
        case .enabled, .disabled:
            let on = state == .enabled
            try call { (s) throws(PKCS11Failure) in
                try s.setAttributes(object, Template().bool(CKA_ENCRYPT, on).bool(CKA_DECRYPT, on))
            }
        case .destroyed:
            // The tombstone first: a crash in between leaves a disabled-looking, still-present
            // key (destroy can be repeated), never a destroyed key reported as "not found".
            try writing { (s) throws(PKCS11Failure) in
                try s.createObject(Template().ulong(CKA_CLASS, CKO_DATA).bool(CKA_TOKEN, true).bool(CKA_PRIVATE, true)
                    .text(CKA_LABEL, Self.label(of: key) + ".destroyed").text(CKA_APPLICATION, "cmkfs"))
                try s.destroyObject(object)
            }
            handles.withLock { $0[key] = nil }
        }
    }

    /// The master keys on the token, each with the state of every version (destroyed ones from
    /// their tombstones), sorted by key id: what `cmkfs-kms key list` shows for a token.
    public func listKeys() throws(KeyProviderError) -> [(keyID: String, versions: [(version: Int, state: ProviderKeyState)])] {
        var found: [String: [Int: ProviderKeyState]] = [:]
        func parse(_ label: String) -> KeyRef? {
            guard let dot = label.range(of: ".v", options: .backwards), let n = Int(label[dot.upperBound...]), n > 0 else { return nil }
            return KeyRef(keyID: String(label[..<dot.lowerBound]), version: n)
        }
        try call { (s) throws(PKCS11Failure) in
            for o in try s.findObjects(Template().ulong(CKA_CLASS, CKO_SECRET_KEY), limit: 4096) {
                let label = String(decoding: try s.bytesAttribute(o, CKA_LABEL), as: UTF8.self)
                guard let key = parse(label) else { continue }
                let encrypt = try s.boolAttribute(o, CKA_ENCRYPT)
                let decrypt = try s.boolAttribute(o, CKA_DECRYPT)
                let usable = encrypt && decrypt
                found[key.keyID, default: [:]][key.version] = usable ? .enabled : .disabled
            }
            for o in try s.findObjects(Template().ulong(CKA_CLASS, CKO_DATA).text(CKA_APPLICATION, "cmkfs"), limit: 4096) {
                let label = String(decoding: try s.bytesAttribute(o, CKA_LABEL), as: UTF8.self)
                guard label.hasSuffix(".destroyed"), let key = parse(String(label.dropLast(".destroyed".count))) else { continue }
                if found[key.keyID]?[key.version] == nil { found[key.keyID, default: [:]][key.version] = .destroyed }
            }
        }
        return found.keys.sorted().map { id in (id, found[id]!.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }) }
    }

    // MARK: audit anchors

    /// The label of a volume's anchor: a private CKO_DATA token object `cmkfs-audit-anchor.<volume id>`
    /// whose CKA_VALUE is the anchor record (readable and writable only after C_Login).
    public static func anchorLabel(volumeID: [UInt8]) -> String {
        "cmkfs-audit-anchor." + volumeID.map { String($0, radix: 16).leftPadded(2) }.joined()
    }

    public func anchorPlace(volumeID: [UInt8]) -> String? {
        "PKCS#11 token '\(tokenLabel)' (object \(Self.anchorLabel(volumeID: volumeID)))"
    }

    /// The anchor objects of a volume with their records (two after a crash between the create
    /// and the destroy of an update: the higher seq wins).
    private func anchors(_ volumeID: [UInt8]) throws(KeyProviderError) -> [(object: CK_OBJECT_HANDLE, seq: UInt64, anchor: [UInt8])] {
        let template = Template().ulong(CKA_CLASS, CKO_DATA).text(CKA_LABEL, Self.anchorLabel(volumeID: volumeID))
        return try call { (s) throws(PKCS11Failure) in
            var out: [(object: CK_OBJECT_HANDLE, seq: UInt64, anchor: [UInt8])] = []
            for o in try s.findObjects(template) {
                if let record = AnchorRecord.decode(try s.bytesAttribute(o, CKA_VALUE)) { out.append((o, record.seq, record.anchor)) }
            }
            return out
        }
    }

    public func auditAnchor(volumeID: [UInt8]) throws(KeyProviderError) -> [UInt8]? {
        try anchors(volumeID).max { $0.seq < $1.seq }?.anchor
    }

    /// Creates the new anchor object, then destroys the old ones: a crash in between leaves both,
    /// never none. Refuses a lower seq than the stored one.
    public func setAuditAnchor(_ anchor: [UInt8], seq: UInt64, volumeID: [UInt8]) throws(KeyProviderError) {
        try writeLock.around { () throws(KeyProviderError) in
            // The search of the old anchors is the write's search first (`TokenWriteLock`).
            let old = try anchors(volumeID)
            if let stored = old.map(\.seq).max(), stored > seq {
                throw .unavailable("PKCS#11 token '\(tokenLabel)': refusing to move the audit anchor back from seq \(stored) to \(seq) (a rollback)")
            }
            try call { (s) throws(PKCS11Failure) in
                try s.createObject(Template().ulong(CKA_CLASS, CKO_DATA).bool(CKA_TOKEN, true).bool(CKA_PRIVATE, true)
                    .bool(CKA_MODIFIABLE, true).text(CKA_LABEL, Self.anchorLabel(volumeID: volumeID))
                    .text(CKA_APPLICATION, "cmkfs").bytes(CKA_VALUE, AnchorRecord.encode(anchor, seq: seq)))
                for o in old { try s.destroyObject(o.object) }
            }
        }
    }

    // MARK: private

    private func notFoundDetail(_ key: KeyRef) -> String {
        "token '\(tokenLabel)' has no secret key labelled \(Self.label(of: key))"
    }

    private func generate(_ key: KeyRef) throws(KeyProviderError) {
        let template = Template()
            .ulong(CKA_CLASS, CKO_SECRET_KEY).ulong(CKA_KEY_TYPE, CKK_AES).ulong(CKA_VALUE_LEN, 32)
            .bool(CKA_TOKEN, true).bool(CKA_PRIVATE, true).bool(CKA_SENSITIVE, true).bool(CKA_EXTRACTABLE, false)
            .bool(CKA_ENCRYPT, true).bool(CKA_DECRYPT, true).bool(CKA_WRAP, false).bool(CKA_UNWRAP, false)
            .bool(CKA_SIGN, false).bool(CKA_VERIFY, false).bool(CKA_DERIVE, false).bool(CKA_MODIFIABLE, true)
            .text(CKA_LABEL, Self.label(of: key)).text(CKA_ID, Self.label(of: key))
        let object = try writing { (s) throws(PKCS11Failure) in try s.generateAESKey(template) }
        handles.withLock { $0[key] = object }
    }

    /// The key version's object handle, from the cache or a search by label; nil if absent.
    private func lookup(_ key: KeyRef) throws(KeyProviderError) -> CK_OBJECT_HANDLE? {
        if let cached = handles.withLock({ $0[key] }) { return cached }
        let template = Template().ulong(CKA_CLASS, CKO_SECRET_KEY).text(CKA_LABEL, Self.label(of: key))
        let found = try call { (s) throws(PKCS11Failure) in try s.findObject(template) }
        if let found { handles.withLock { $0[key] = found } }
        return found
    }

    private func hasTombstone(_ key: KeyRef) throws(KeyProviderError) -> Bool {
        let template = Template().ulong(CKA_CLASS, CKO_DATA).text(CKA_LABEL, Self.label(of: key) + ".destroyed")
        return try call { (s) throws(PKCS11Failure) in try s.findObject(template) } != nil
    }

    /// Runs a crypto operation with the key's handle, mapping the token's answers to refusals:
    /// CKR_KEY_FUNCTION_NOT_PERMITTED = disabled, a vanished object = destroyed (or not found),
    /// CKR_GENERAL_ERROR/CKR_ENCRYPTED_DATA_* from decrypt = wrong tag (SoftHSM reports a GCM tag
    /// mismatch as CKR_GENERAL_ERROR).
    private func withKey<R>(_ key: KeyRef, _ body: (PKCS11Session, CK_OBJECT_HANDLE) throws(PKCS11Failure) -> R) throws(KeyProviderError) -> R {
        for _ in 0..<2 {
            guard let object = try lookup(key) else {
                if try hasTombstone(key) { throw .keyDestroyed(key) }
                throw .keyNotFound(key, detail: notFoundDetail(key))
            }
            do {
                return try pool.withSession { (s) throws(PKCS11Failure) in try body(s, object) }
            } catch {
                if error.staleHandle {
                    handles.withLock { $0[key] = nil }
                    continue
                }
                switch error.rv {
                case CKR_KEY_FUNCTION_NOT_PERMITTED: throw .keyDisabled(key)
                case CKR_GENERAL_ERROR, CKR_ENCRYPTED_DATA_INVALID, CKR_ENCRYPTED_DATA_LEN_RANGE:
                    if error.function == "C_Decrypt" { throw .unwrapFailed(key) }
                    throw unavailable(error)
                default: throw unavailable(error)
                }
            }
        }
        throw .keyNotFound(key, detail: notFoundDetail(key))
    }

    /// `call` for a body that creates or destroys token objects: under the token's write lock,
    /// after a search, so this process adopts no other process's change unseen (`TokenWriteLock`).
    private func writing<R>(_ body: (PKCS11Session) throws(PKCS11Failure) -> R) throws(KeyProviderError) -> R {
        try writeLock.around { () throws(KeyProviderError) in
            try call { (s) throws(PKCS11Failure) in
                _ = try s.findObject(Template().ulong(CKA_CLASS, CKO_DATA).text(CKA_LABEL, "cmkfs-write-lock-search"))
                return try body(s)
            }
        }
    }

    private func call<R>(_ body: (PKCS11Session) throws(PKCS11Failure) -> R) throws(KeyProviderError) -> R {
        do { return try pool.withSession(body) } catch { throw unavailable(error) }
    }

    private func unavailable(_ failure: PKCS11Failure) -> KeyProviderError {
        .unavailable("PKCS#11 token '\(tokenLabel)': \(failure)")
    }
}

extension String {
    func leftPadded(_ width: Int) -> String { String(repeating: "0", count: max(0, width - count)) + self }
}

/// Runs `body` over a scratch copy of `bytes` (Array's own closures are not typed-throws).
func withRawCopy<R, E: Error>(_ bytes: [UInt8], _ body: (UnsafeMutableRawBufferPointer) throws(E) -> R) throws(E) -> R {
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(bytes.count, 1), alignment: 16)
    defer { buffer.deallocate() }
    buffer.copyBytes(from: bytes)
    return try body(UnsafeMutableRawBufferPointer(rebasing: buffer[0..<bytes.count]))
}
