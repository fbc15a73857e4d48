import ArgumentParser
import Foundation
import CMKCrypto
import CMKKeys
import CMKPKCS11

/// Where `cmkfs-kms` keeps the master keys: a keystore directory (`--kms-dir`, as in `cmkfs`;
/// `--state` is its old name), or a PKCS#11 token
/// (`--pkcs11-module`, `--token`, `--pin-file`) so that the server fronts an HSM.
struct KeyStoreOptions: ParsableArguments {
    @Option(name: .customLong("kms-dir"), help: "The keystore directory (created 0700 if missing); with a token, where the audit log goes.")
    var kmsDir: String?
    /// The flag's name before it was `--kms-dir`, as `cmkfs` calls it; kept for old scripts and units.
    @Option(name: .customLong("state"), help: .hidden)
    var legacyState: String?
    /// The keystore directory, by either name.
    var state: String? { kmsDir ?? legacyState }
    @Option(name: .customLong("pkcs11-module"), help: "Keep the master keys in a PKCS#11 token: the module (.so) to load.")
    var pkcs11Module: String?
    @Option(help: "With --pkcs11-module: the label of the token.") var token: String?
    @Option(name: .customLong("pin-file"), help: "With --pkcs11-module: a file (mode 0600) holding the token's user PIN.")
    var pinFile: String?

    var usesToken: Bool { pkcs11Module != nil }

    func validate() throws {
        if kmsDir != nil && legacyState != nil { throw ValidationError("give the keystore once: --kms-dir DIR (--state is its old name)") }
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
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            fail("cannot read the PIN file \(path): \(String(cString: strerror(errno)))",
                 hint: "write the token's user PIN into a file only this user can read (chmod 600)")
        }
        defer { close(fd) }
        var st = stat()
        if fstat(fd, &st) == 0, st.st_mode & 0o044 != 0 {
            fail("the PIN file \(path) is readable by other users (mode 0\(String(st.st_mode & 0o7777, radix: 8))): it exposes the token's PIN",
                 hint: "chmod 600 \(path), and change the token's PIN if others may have read it")
        }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 256, alignment: 16)
        defer { secureZero(buffer); buffer.deallocate() }
        let n = read(fd, buffer.baseAddress, buffer.count)
        var length = max(0, n)
        if let newline = buffer[0..<length].firstIndex(where: { $0 == 0x0A || $0 == 0x0D }) { length = newline }
        guard length > 0 else { fail("the PIN file \(path) is empty", hint: "write the token's user PIN into it") }
        return SecretBytes(copying: UnsafeRawBufferPointer(rebasing: buffer[0..<length]))
    }
}
