import Glibc
import Synchronization
import CPKCS11
import CMKSystem

/// A PKCS#11 module loaded with `dlopen` and initialized with `CKF_OS_LOCKING_OK`, so that any
/// number of threads may use it, each with its own session.
///
/// One instance per module path per process, kept for the life of the process: Cryptoki allows
/// one `C_Initialize` per process, and `C_Finalize` would pull the rug from every other provider
/// using the module. The registry lock is held across `dlopen` and `C_Initialize` (once per path).
final class PKCS11Module: @unchecked Sendable {
    // Sound: both fields are written once in `init` and only read after; the module does its own
    // locking (we asked for CKF_OS_LOCKING_OK) and every session is used by one thread at a time.
    let path: String
    let functions: UnsafeMutablePointer<CK_FUNCTION_LIST>

    /// Loaded modules by path; guarded by its mutex.
    private static let loaded = Mutex<[String: PKCS11Module]>([:])

    private init(path: String, functions: UnsafeMutablePointer<CK_FUNCTION_LIST>) {
        self.path = path
        self.functions = functions
    }

    /// The module at `path`, loaded and initialized on first use.
    static func load(_ given: String) throws(PKCS11OpenError) -> PKCS11Module {
        // One module per file, however it is reached (a symlink, p11-kit's registry): a second
        // C_Initialize of the same library would fail.
        let path = (try? ProcessControls.realPath(given)) ?? given
        return try loaded.withLock { (modules: inout [String: PKCS11Module]) throws(PKCS11OpenError) -> PKCS11Module in
            if let module = modules[path] { return module }
            let module = try open(path)
            modules[path] = module
            return module
        }
    }

    private static func open(_ path: String) throws(PKCS11OpenError) -> PKCS11Module {
        guard (try? Descriptor.cwd.access(path, mode: F_OK)) != nil else { throw .moduleMissing(path: path) }
        guard let handle = dlopen(path, RTLD_NOW | RTLD_LOCAL) else {
            throw .moduleInvalid(path: path, why: dlerror().map { String(cString: $0) } ?? "dlopen failed")
        }
        guard let symbol = dlsym(handle, "C_GetFunctionList") else {
            dlclose(handle)
            throw .moduleInvalid(path: path, why: "it has no C_GetFunctionList")
        }
        var list: UnsafeMutablePointer<CK_FUNCTION_LIST>?
        let rv = cmk_p11_get_function_list(symbol, &list)
        guard rv == CKR_OK, let list, let initialize = list.pointee.C_Initialize else {
            throw .moduleInvalid(path: path, why: "C_GetFunctionList returned \(PKCS11Failure.name(rv))")
        }
        var args = CK_C_INITIALIZE_ARGS()
        args.flags = CKF_OS_LOCKING_OK
        let initRV = initialize(&args)
        guard initRV == CKR_OK || initRV == CKR_CRYPTOKI_ALREADY_INITIALIZED else {
            throw .moduleInvalid(path: path, why: "C_Initialize returned \(PKCS11Failure.name(initRV))")
        }
        return PKCS11Module(path: path, functions: list)
    }

    /// The slot holding the initialized token labelled `label` (slot ids change when tokens are
    /// added, labels do not).
    func slot(forToken label: String) throws(PKCS11OpenError) -> CK_SLOT_ID {
        let f = functions.pointee
        var count: CK_ULONG = 0
        guard f.C_GetSlotList!(CK_BBOOL(CK_TRUE), nil, &count) == CKR_OK else {
            throw .failed(token: label, call: "C_GetSlotList")
        }
        var slots = [CK_SLOT_ID](repeating: 0, count: Int(count))
        guard f.C_GetSlotList!(CK_BBOOL(CK_TRUE), &slots, &count) == CKR_OK else {
            throw .failed(token: label, call: "C_GetSlotList")
        }
        var seen: [String] = []
        for slot in slots.prefix(Int(count)) {
            var info = CK_TOKEN_INFO()
            guard f.C_GetTokenInfo!(slot, &info) == CKR_OK, info.flags & CKF_TOKEN_INITIALIZED != 0 else { continue }
            let name = withUnsafeBytes(of: info.label) { raw in
                String(decoding: raw, as: UTF8.self).trimmingTrailingSpaces()
            }
            if name == label { return slot }
            seen.append(name)
        }
        throw .tokenNotFound(label: label, available: seen.sorted())
    }
}

extension String {
    /// PKCS#11 pads fixed-size text fields with blanks.
    func trimmingTrailingSpaces() -> String {
        var s = Substring(self)
        while s.last == " " || s.last == "\0" { s.removeLast() }
        return String(s)
    }
}
