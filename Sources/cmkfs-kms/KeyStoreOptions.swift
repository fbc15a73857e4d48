import ArgumentParser
import Foundation
import CMKCrypto
import CMKKeys
import CMKPKCS11
import CMKSystem

/// Where `cmkfs-kms` keeps the master keys: a keystore directory (`--kms-dir`, as in `cmkfs`;
/// `--state` is its old name), or a PKCS#11 token
/// (`--pkcs11-module`, `--token`, `--pin-file`, or all three in `--pkcs11-uri`) so that the
/// server fronts an HSM.
struct KeyStoreOptions: ParsableArguments {
    @Option(name: .customLong("kms-dir"), help: "The keystore directory (created 0700 if missing); with a token, where the audit log goes.")
    var kmsDir: String?
    /// The flag's name before it was `--kms-dir`, as `cmkfs` calls it; kept for old scripts and units.
    @Option(name: .customLong("state"), help: .hidden)
    var legacyState: String?
    /// The keystore directory, by either name.
    var state: String? { kmsDir ?? legacyState }
    @Option(name: .customLong("pkcs11-module"),
            help: "Keep the master keys in a PKCS#11 token: the module to load, a library path or a name in p11-kit's registry (softhsm2).")
    var moduleFlag: String?
    @Option(name: .customLong("token"), help: "With --pkcs11-module: the label of the token.") var tokenFlag: String?
    @Option(name: .customLong("pin-file"), help: "With --pkcs11-module: a file (mode 0600) holding the token's user PIN.")
    var pinFileFlag: String?
    @Option(name: .customLong("pkcs11-uri"),
            help: "The token as an RFC 7512 URI instead of the three flags above: 'pkcs11:token=T?module-name=softhsm2&pin-source=file:/path'.")
    var uriText: String?

    /// `--pkcs11-uri`, parsed (`validate` refuses one that does not parse).
    private var uri: PKCS11URI? { uriText.flatMap { try? PKCS11URI(parsing: $0) } }
    /// The token's module, label and PIN file, from their flags or the URI.
    var pkcs11Module: String? { moduleFlag ?? uri?.moduleName ?? uri?.modulePath }
    var token: String? { tokenFlag ?? uri?.token }
    var pinFile: String? { pinFileFlag ?? (try? uri?.pinFile) ?? nil }

    var usesToken: Bool { pkcs11Module != nil }

    func validate() throws {
        if kmsDir != nil && legacyState != nil { throw ValidationError("give the keystore once: --kms-dir DIR (--state is its old name)") }
        if let uriText {
            let uri: PKCS11URI
            do { uri = try PKCS11URI(parsing: uriText) } catch { throw ValidationError("--pkcs11-uri: \(error)") }
            if let other = uri.path.keys.sorted().first(where: { $0 != "token" }) {
                throw ValidationError("--pkcs11-uri: \(other)= is not used by cmkfs-kms, which finds the token by its label (token=)")
            }
            if uri.query["pin-value"] != nil {
                throw ValidationError("--pkcs11-uri: pin-value= would put the PIN in argv; use pin-source=file:PATH (mode 0600)")
            }
            do { _ = try uri.pinFile } catch { throw ValidationError("--pkcs11-uri: \(error)") }
            let both = [("--pkcs11-module", moduleFlag, uri.moduleName ?? uri.modulePath), ("--token", tokenFlag, uri.token),
                        ("--pin-file", pinFileFlag, try? uri.pinFile)]
            if let (flag, _, _) = both.first(where: { $0.1 != nil && $0.2 != nil }) {
                throw ValidationError("\(flag) and --pkcs11-uri both name it: give it once")
            }
        }
        if usesToken || token != nil || pinFile != nil {
            guard pkcs11Module != nil, token != nil, pinFile != nil else {
                throw ValidationError("a token needs all three of --pkcs11-module LIB, --token LABEL and --pin-file FILE")
            }
        }
    }

    /// A keystore-directory command without --kms-dir (checked here, not in `validate`, since
    /// `serve` with a token may do without it).
    func requireState() -> String {
        guard let state else {
            fail("give the keystore directory with --kms-dir DIR, or a token with --pkcs11-module, --token and --pin-file", code: 64)
        }
        return state
    }

    /// The key store, opened (a keystore directory is created when `create`).
    func open(create: Bool) -> any KeyProvider {
        guard let module = pkcs11Module, let token, let pinFile else { return openKeystore(requireState(), create: create) }
        let pin = readPIN(pinFile)
        do { return try PKCS11Provider(modulePath: module, tokenLabel: token, pin: pin) } catch {
            fail(error.message, hint: error.hint)
        }
    }

    /// Every key with the state of each version.
    func list() throws(KeyProviderError) -> [(keyID: String, versions: [(version: Int, state: ProviderKeyState)])] {
        switch open(create: false) {
        case let token as PKCS11Provider: return try token.listKeys()
        case let keystore as SimulatedKMS: return try keystore.listKeys().map { ($0.keyID, $0.versions.map { ($0.0, $0.1) }) }
        case let other: throw .unavailable("cannot list the keys of a \(other.kind) provider")
        }
    }

    /// Where the keys are, for messages.
    var place: String { usesToken ? "PKCS#11 token '\(token ?? "?")'" : (state ?? "?") }

    /// The PIN: the file's first line. A file others may read exposes the PIN and is refused.
    private func readPIN(_ path: String) -> SecretBytes {
        let file: FileDescriptor
        do { file = try FileDescriptor.open(path, O_RDONLY | O_CLOEXEC) } catch {
            fail("cannot read the PIN file \(path): \(error.errno)",
                 hint: "write the token's user PIN into a file only this user can read (chmod 600)")
        }
        if let st = try? file.descriptor.fstat(), st.st_mode & 0o044 != 0 {
            fail("the PIN file \(path) is readable by other users (mode 0\(String(st.st_mode & 0o7777, radix: 8))): it exposes the token's PIN",
                 hint: "chmod 600 \(path), and change the token's PIN if others may have read it")
        }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 256, alignment: 16)
        defer { secureZero(buffer); buffer.deallocate() }
        var length = (try? file.descriptor.read(into: buffer)) ?? 0
        if let newline = buffer[0..<length].firstIndex(where: { $0 == 0x0A || $0 == 0x0D }) { length = newline }
        guard length > 0 else { fail("the PIN file \(path) is empty", hint: "write the token's user PIN into it") }
        return SecretBytes(copying: UnsafeRawBufferPointer(rebasing: buffer[0..<length]))
    }
}
