import CMKKeys
import CMKPKCS11

/// The `cmkfs init` flags a `pkcs11:` URI stands for: `token` → `--token`, `object` → `--key-label`,
/// `module-name`/`module-path` → `--pkcs11-module`, `pin-source` → `--pin-file`. Attributes cmkfs
/// cannot honour are refused by name rather than ignored (a `serial=` that selected nothing would
/// mislead), and so is `pin-value`, which would put the PIN in argv and shell history.
@Sendable public func pkcs11URIFlags(_ text: String) throws(CMKError) -> [String: String] {
    func refuse(_ why: String) -> CMKError { CMKError(.usage, "--pkcs11-uri: \(why)", hint: PKCS11OpenError.uri("").hint) }
    let uri: PKCS11URI
    do { uri = try PKCS11URI(parsing: text) } catch { throw refuse("\(error)") }
    let honoured: Set<String> = ["token", "object", "type"]
    if let other = uri.path.keys.sorted().first(where: { !honoured.contains($0) }) {
        throw refuse("\(other)= is not used by cmkfs, which finds the token by its label (token=) and the key by object=")
    }
    for name in uri.path.keys.sorted() where uri.string(name) == nil { throw refuse("\(name)= is not UTF-8 text") }
    if let type = uri.type, type != "secret-key" { throw refuse("type=\(type): cmkfs's master keys are secret keys (type=secret-key)") }
    if uri.query["pin-value"] != nil { throw refuse("pin-value= would put the PIN in argv and shell history; use pin-source=file:PATH (mode 0600)") }
    var flags: [String: String] = [:]
    flags["--pkcs11-module"] = uri.moduleName ?? uri.modulePath
    flags["--token"] = uri.token
    flags["--key-label"] = uri.object
    do { flags["--pin-file"] = try uri.pinFile } catch { throw refuse("\(error)") }
    return flags
}

extension ProviderKind {
    /// An HSM token through its PKCS#11 module; the user PIN is needed at every open.
    public static let pkcs11 = ProviderKind(
        name: "pkcs11",
        initHelp: "--kms pkcs11: --pkcs11-module PATH|NAME --token LABEL (or both in --pkcs11-uri), PIN from --pin-file FILE, "
            + "$CMKFS_PKCS11_PIN or the terminal; --key-label NAME names (or reuses) the master key.",
        flags: [
            ProviderFlag("--pkcs11-module", valueName: "PATH|NAME",
                         help: "pkcs11: the PKCS#11 module: a library path (/usr/lib/softhsm/libsofthsm2.so) or a name in p11-kit's registry (softhsm2).",
                         target: .setting("pkcs11_module"), required: true),
            ProviderFlag("--pkcs11-uri", valueName: "URI",
                         help: "pkcs11: an RFC 7512 URI instead: 'pkcs11:token=T;object=KEY?module-name=softhsm2&pin-source=file:/path'.",
                         target: .expands(pkcs11URIFlags)),
            ProviderFlag("--token", valueName: "LABEL", help: "pkcs11: the token label.", target: .setting("token_label"), required: true),
            ProviderFlag("--pin-file", valueName: "FILE", help: "pkcs11: a file holding the user PIN (else $CMKFS_PKCS11_PIN, else the terminal).",
                         target: .secretFile),
            ProviderFlag("--key-label", valueName: "NAME", help: "pkcs11: the master key's label stem (objects <label>.v<N>); reused if present.",
                         target: .keyID),
        ],
        secret: ProviderSecret(name: "PIN", environmentVariable: "CMKFS_PKCS11_PIN",
                               prompt: { "PIN for PKCS#11 token '\($0.tokenLabel ?? "?")': " }),
        rotationParallelism: .fixed(8),
        build: { config, context throws(CMKError) in
            guard let module = config.pkcs11Module, let token = config.tokenLabel else {
                throw CMKError(.notAVolume, "\(context.volume) uses PKCS#11 but records no pkcs11_module or token_label")
            }
            guard let pin = context.secret else {
                throw CMKError(.keyUnavailable, "the PIN of PKCS#11 token '\(token)' is needed for \(context.volume)",
                               hint: "give it with --pin-file FILE, the CMKFS_PKCS11_PIN environment variable, or at the terminal prompt")
            }
            do throws(PKCS11OpenError) { return try PKCS11Provider(modulePath: module, tokenLabel: token, pin: pin) } catch {
                throw CMKError(.keyUnavailable, error.message, hint: error.hint)
            }
        },
        namedMasterKey: { provider, label throws(KeyProviderError) in
            // --key-label names the key: reused when the token has `<label>.v1`, else created.
            guard let hsm = provider as? PKCS11Provider else { return nil }
            do throws(KeyProviderError) { _ = try hsm.state(of: KeyRef(keyID: label, version: 1)) } catch .keyNotFound {
                return try hsm.createKey(named: label)
            }
            return nil
        },
        place: { "PKCS#11 token '\($0.tokenLabel ?? "?")'" },
        initDescription: { "PKCS#11 token '\($0.tokenLabel ?? "?")' (\($0.pkcs11Module ?? "?"))" },
        statusDetail: { config in config.tokenLabel.map { " token '\($0)' via \(config.pkcs11Module ?? "?")" } ?? "" },
        hints: { config in
            ProviderHints(notFound: "check that token '\(config.tokenLabel ?? "?")' holds a secret key labelled \(config.keyID).v1 (pkcs11-tool --list-objects)",
                          disabled: "the HSM administrator must allow encrypt/decrypt on key \(config.keyID) again",
                          unavailable: "check the HSM and its PKCS#11 module \(config.pkcs11Module ?? "")")
        }
    )
}
