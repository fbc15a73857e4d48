import CPKCS11

/// A PKCS#11 call that returned something other than CKR_OK: the function and its CKR_* value.
/// Internal to this module; the provider turns it into a `KeyProviderError` or a `PKCS11OpenError`.
struct PKCS11Failure: Error, CustomStringConvertible {
    let function: String
    let rv: UInt

    var description: String { "\(function) returned \(PKCS11Failure.name(rv))" }

    /// Whether the session that saw this is no longer usable (it is closed, not pooled again).
    var brokenSession: Bool {
        [CKR_SESSION_HANDLE_INVALID, CKR_SESSION_CLOSED, CKR_DEVICE_REMOVED, CKR_DEVICE_ERROR,
         CKR_TOKEN_NOT_PRESENT, CKR_USER_NOT_LOGGED_IN, CKR_CRYPTOKI_NOT_INITIALIZED].contains(rv)
    }

    /// The object handle no longer names an object (destroyed, by us or by another process).
    var staleHandle: Bool { rv == CKR_OBJECT_HANDLE_INVALID || rv == CKR_KEY_HANDLE_INVALID }

    /// `CKR_NAME (0x…)` for the values cmkfs meets; the hex value for the rest.
    static func name(_ rv: UInt) -> String {
        let names: [UInt: String] = [
            CKR_OK: "CKR_OK", CKR_HOST_MEMORY: "CKR_HOST_MEMORY", CKR_SLOT_ID_INVALID: "CKR_SLOT_ID_INVALID",
            CKR_GENERAL_ERROR: "CKR_GENERAL_ERROR", CKR_FUNCTION_FAILED: "CKR_FUNCTION_FAILED",
            CKR_ARGUMENTS_BAD: "CKR_ARGUMENTS_BAD", CKR_ATTRIBUTE_READ_ONLY: "CKR_ATTRIBUTE_READ_ONLY",
            CKR_ATTRIBUTE_SENSITIVE: "CKR_ATTRIBUTE_SENSITIVE", CKR_DEVICE_ERROR: "CKR_DEVICE_ERROR",
            CKR_DEVICE_REMOVED: "CKR_DEVICE_REMOVED", CKR_ENCRYPTED_DATA_INVALID: "CKR_ENCRYPTED_DATA_INVALID",
            CKR_ENCRYPTED_DATA_LEN_RANGE: "CKR_ENCRYPTED_DATA_LEN_RANGE", CKR_KEY_HANDLE_INVALID: "CKR_KEY_HANDLE_INVALID",
            CKR_KEY_FUNCTION_NOT_PERMITTED: "CKR_KEY_FUNCTION_NOT_PERMITTED", CKR_MECHANISM_INVALID: "CKR_MECHANISM_INVALID",
            CKR_MECHANISM_PARAM_INVALID: "CKR_MECHANISM_PARAM_INVALID", CKR_OBJECT_HANDLE_INVALID: "CKR_OBJECT_HANDLE_INVALID",
            CKR_PIN_INCORRECT: "CKR_PIN_INCORRECT", CKR_PIN_INVALID: "CKR_PIN_INVALID", CKR_PIN_LEN_RANGE: "CKR_PIN_LEN_RANGE",
            CKR_PIN_EXPIRED: "CKR_PIN_EXPIRED", CKR_PIN_LOCKED: "CKR_PIN_LOCKED", CKR_SESSION_CLOSED: "CKR_SESSION_CLOSED",
            CKR_SESSION_HANDLE_INVALID: "CKR_SESSION_HANDLE_INVALID", CKR_TOKEN_NOT_PRESENT: "CKR_TOKEN_NOT_PRESENT",
            CKR_TOKEN_NOT_RECOGNIZED: "CKR_TOKEN_NOT_RECOGNIZED", CKR_USER_ALREADY_LOGGED_IN: "CKR_USER_ALREADY_LOGGED_IN",
            CKR_USER_NOT_LOGGED_IN: "CKR_USER_NOT_LOGGED_IN", CKR_USER_PIN_NOT_INITIALIZED: "CKR_USER_PIN_NOT_INITIALIZED",
            CKR_BUFFER_TOO_SMALL: "CKR_BUFFER_TOO_SMALL", CKR_CRYPTOKI_NOT_INITIALIZED: "CKR_CRYPTOKI_NOT_INITIALIZED",
            CKR_CRYPTOKI_ALREADY_INITIALIZED: "CKR_CRYPTOKI_ALREADY_INITIALIZED", CKR_TEMPLATE_INCONSISTENT: "CKR_TEMPLATE_INCONSISTENT",
            CKR_TEMPLATE_INCOMPLETE: "CKR_TEMPLATE_INCOMPLETE", CKR_OPERATION_ACTIVE: "CKR_OPERATION_ACTIVE",
        ]
        let hex = "0x" + String(rv, radix: 16, uppercase: true)
        return names[rv].map { "\($0) (\(hex))" } ?? hex
    }
}

/// Why the token could not be opened at all, with a one-line fix. The CLI prints `message` as
/// `cmkfs: error:` and `hint` as `cmkfs: hint:` and exits 5 (key unavailable).
public enum PKCS11OpenError: Error, Equatable, CustomStringConvertible {
    /// No file at the module path.
    case moduleMissing(path: String)
    /// A module given by name that p11-kit's registry does not list; `known` are the names it does.
    case moduleNotRegistered(name: String, known: [String], directories: [String])
    /// A `pkcs11:` URI that is malformed, names an unknown attribute, or asks for what cmkfs cannot use.
    case uri(String)
    /// The file is not a loadable PKCS#11 module.
    case moduleInvalid(path: String, why: String)
    /// No initialized token has this label; `available` lists the labels seen.
    case tokenNotFound(label: String, available: [String])
    /// C_Login said CKR_PIN_INCORRECT (or the PIN has an impossible length).
    case pinIncorrect(token: String)
    /// C_Login said CKR_PIN_LOCKED: too many wrong PINs.
    case pinLocked(token: String)
    /// C_Login said CKR_PIN_EXPIRED.
    case pinExpired(token: String)
    /// Any other failure while loading the module or opening a session.
    case failed(token: String, call: String)

    /// Maps C_Login's return value (pure logic, unit-tested for the codes SoftHSM cannot produce).
    static func login(_ failure: PKCS11Failure, token: String) -> PKCS11OpenError {
        switch failure.rv {
        case CKR_PIN_INCORRECT, CKR_PIN_LEN_RANGE, CKR_PIN_INVALID: return .pinIncorrect(token: token)
        case CKR_PIN_LOCKED: return .pinLocked(token: token)
        case CKR_PIN_EXPIRED: return .pinExpired(token: token)
        default: return .failed(token: token, call: failure.description)
        }
    }

    /// Maps a login return value given as a raw CKR_* number (for tests of the mapping).
    public static func login(rv: UInt, token: String) -> PKCS11OpenError {
        login(PKCS11Failure(function: "C_Login", rv: rv), token: token)
    }

    public var description: String { message }

    public var message: String {
        switch self {
        case .moduleMissing(let path): return "the PKCS#11 module \(path) does not exist"
        case .moduleNotRegistered(let name, let known, let directories):
            return "no PKCS#11 module named '\(name)' in p11-kit's registry (\(directories.joined(separator: ", ")))"
                + (known.isEmpty ? "" : "; registered: \(known.joined(separator: ", "))")
        case .uri(let why): return why
        case .moduleInvalid(let path, let why): return "\(path) is not a usable PKCS#11 module: \(why)"
        case .tokenNotFound(let label, let available):
            return "no PKCS#11 token labelled '\(label)'" + (available.isEmpty ? " (the module shows no initialized token)"
                                                                               : " (tokens: \(available.map { "'\($0)'" }.joined(separator: ", ")))")
        case .pinIncorrect(let token): return "wrong PIN for PKCS#11 token '\(token)' (CKR_PIN_INCORRECT)"
        case .pinLocked(let token): return "the user PIN of PKCS#11 token '\(token)' is locked (CKR_PIN_LOCKED)"
        case .pinExpired(let token): return "the user PIN of PKCS#11 token '\(token)' has expired (CKR_PIN_EXPIRED)"
        case .failed(let token, let call): return "PKCS#11 token '\(token)' failed: \(call)"
        }
    }

    public var hint: String {
        switch self {
        case .moduleMissing: return "install the HSM's PKCS#11 library (for SoftHSM2: apt-get install softhsm2) or fix --pkcs11-module"
        case .moduleNotRegistered: return "give the module's path (--pkcs11-module /usr/lib/…/libX.so) or a registered name (p11-kit list-modules)"
        case .uri: return "e.g. --pkcs11-uri 'pkcs11:token=NAME;object=LABEL?module-name=softhsm2&pin-source=file:/etc/cmkfs/token.pin'"
        case .moduleInvalid: return "pass the vendor's PKCS#11 library (a .so exporting C_GetFunctionList) as --pkcs11-module"
        case .tokenNotFound: return "check the label with: softhsm2-util --show-slots (or your HSM's tool), and SOFTHSM2_CONF for SoftHSM"
        case .pinIncorrect: return "give the token's user PIN with --pin-file FILE or CMKFS_PKCS11_PIN; repeated wrong PINs lock real HSMs"
        case .pinLocked: return "the token's security officer must unlock or reset the user PIN (softhsm2-util/HSM admin tool)"
        case .pinExpired: return "change the user PIN with the HSM's tool, then retry"
        case .failed: return "check the HSM's own logs; for SoftHSM2 check SOFTHSM2_CONF and the token directory's permissions"
        }
    }
}
