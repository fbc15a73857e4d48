import CPKCS11
import CMKCrypto

/// One PKCS#11 session and the calls cmkfs makes in it. Not thread-safe: a session is used by one
/// thread at a time, which the `SessionPool` guarantees. Raw Cryptoki types stay in this module.
struct PKCS11Session {
    let module: PKCS11Module
    let handle: CK_SESSION_HANDLE

    private var f: CK_FUNCTION_LIST { module.functions.pointee }

    private func check(_ function: String, _ rv: CK_RV) throws(PKCS11Failure) {
        guard rv == CKR_OK else { throw PKCS11Failure(function: function, rv: rv) }
    }

    static func open(_ module: PKCS11Module, slot: CK_SLOT_ID) throws(PKCS11Failure) -> PKCS11Session {
        var handle: CK_SESSION_HANDLE = 0
        let rv = module.functions.pointee.C_OpenSession!(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, nil, nil, &handle)
        guard rv == CKR_OK else { throw PKCS11Failure(function: "C_OpenSession", rv: rv) }
        return PKCS11Session(module: module, handle: handle)
    }

    func close() { _ = f.C_CloseSession!(handle) }

    /// C_Login as the user; "already logged in" (another session of this process did) is success.
    func login(pin: SecretBytes) throws(PKCS11Failure) {
        let rv = pin.withUnsafeBytes { p in
            f.C_Login!(handle, CKU_USER, UnsafeMutablePointer(mutating: p.bindMemory(to: UInt8.self).baseAddress), CK_ULONG(p.count))
        }
        guard rv == CKR_OK || rv == CKR_USER_ALREADY_LOGGED_IN else { throw PKCS11Failure(function: "C_Login", rv: rv) }
    }

    /// The first object matching `template` (C_FindObjectsInit/C_FindObjects/C_FindObjectsFinal).
    func findObject(_ template: Template) throws(PKCS11Failure) -> CK_OBJECT_HANDLE? {
        try template.withAttributes { (attrs, count) throws(PKCS11Failure) in
            try check("C_FindObjectsInit", f.C_FindObjectsInit!(handle, attrs, count))
            var object: CK_OBJECT_HANDLE = 0
            var found: CK_ULONG = 0
            let rv = f.C_FindObjects!(handle, &object, 1, &found)
            _ = f.C_FindObjectsFinal!(handle)
            try check("C_FindObjects", rv)
            return found == 1 ? object : nil
        }
    }

    /// Every object matching `template`, at most `limit`.
    func findObjects(_ template: Template, limit: Int = 16) throws(PKCS11Failure) -> [CK_OBJECT_HANDLE] {
        try template.withAttributes { (attrs, count) throws(PKCS11Failure) in
            try check("C_FindObjectsInit", f.C_FindObjectsInit!(handle, attrs, count))
            var objects = [CK_OBJECT_HANDLE](repeating: 0, count: limit)
            var found: CK_ULONG = 0
            let rv = f.C_FindObjects!(handle, &objects, CK_ULONG(limit), &found)
            _ = f.C_FindObjectsFinal!(handle)
            try check("C_FindObjects", rv)
            return Array(objects.prefix(Int(found)))
        }
    }

    /// A byte-array attribute of `object` (size first, then the value).
    func bytesAttribute(_ object: CK_OBJECT_HANDLE, _ type: CK_ATTRIBUTE_TYPE) throws(PKCS11Failure) -> [UInt8] {
        var attr = CK_ATTRIBUTE(type: type, pValue: nil, ulValueLen: 0)
        try check("C_GetAttributeValue", f.C_GetAttributeValue!(handle, object, &attr, 1))
        let size = Int(attr.ulValueLen)
        guard size > 0, size < 1 << 16 else { return [] }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 16)
        defer { buffer.deallocate() }
        attr.pValue = buffer.baseAddress
        try check("C_GetAttributeValue", f.C_GetAttributeValue!(handle, object, &attr, 1))
        return Array(buffer.prefix(Int(attr.ulValueLen)))
    }

    /// C_GenerateKey with CKM_AES_KEY_GEN.
    func generateAESKey(_ template: Template) throws(PKCS11Failure) -> CK_OBJECT_HANDLE {
        var mechanism = CK_MECHANISM(mechanism: CKM_AES_KEY_GEN, pParameter: nil, ulParameterLen: 0)
        var key: CK_OBJECT_HANDLE = 0
        try template.withAttributes { (attrs, count) throws(PKCS11Failure) in
            try check("C_GenerateKey", f.C_GenerateKey!(handle, &mechanism, attrs, count, &key))
        }
        return key
    }

    func createObject(_ template: Template) throws(PKCS11Failure) {
        var object: CK_OBJECT_HANDLE = 0
        try template.withAttributes { (attrs, count) throws(PKCS11Failure) in
            try check("C_CreateObject", f.C_CreateObject!(handle, attrs, count, &object))
        }
    }

    func destroyObject(_ object: CK_OBJECT_HANDLE) throws(PKCS11Failure) {
        try check("C_DestroyObject", f.C_DestroyObject!(handle, object))
    }

    func setAttributes(_ object: CK_OBJECT_HANDLE, _ template: Template) throws(PKCS11Failure) {
        try template.withAttributes { (attrs, count) throws(PKCS11Failure) in
            try check("C_SetAttributeValue", f.C_SetAttributeValue!(handle, object, attrs, count))
        }
    }

    /// A CK_BBOOL attribute of `object`.
    func boolAttribute(_ object: CK_OBJECT_HANDLE, _ type: CK_ATTRIBUTE_TYPE) throws(PKCS11Failure) -> Bool {
        let value = UnsafeMutablePointer<CK_BBOOL>.allocate(capacity: 1)
        defer { value.deallocate() }
        value.pointee = 0
        var attr = CK_ATTRIBUTE(type: type, pValue: UnsafeMutableRawPointer(value), ulValueLen: CK_ULONG(MemoryLayout<CK_BBOOL>.size))
        try check("C_GetAttributeValue", f.C_GetAttributeValue!(handle, object, &attr, 1))
        return value.pointee != 0
    }

    /// CKM_AES_GCM encryption of `plaintext` with a 96-bit `iv`, `aad` and a 128-bit tag into
    /// `output` (plaintext count + 16 bytes). Returns the bytes written.
    func gcmEncrypt(key: CK_OBJECT_HANDLE, iv: [UInt8], aad: [UInt8], plaintext: UnsafeRawBufferPointer,
                    into output: UnsafeMutableRawBufferPointer) throws(PKCS11Failure) -> Int {
        try withGCM(iv: iv, aad: aad) { (mechanism) throws(PKCS11Failure) in
            try check("C_EncryptInit", f.C_EncryptInit!(handle, mechanism, key))
            var outLen = CK_ULONG(output.count)
            try check("C_Encrypt", f.C_Encrypt!(handle, UnsafeMutablePointer(mutating: plaintext.bindMemory(to: UInt8.self).baseAddress),
                                                CK_ULONG(plaintext.count), output.bindMemory(to: UInt8.self).baseAddress, &outLen))
            return Int(outLen)
        }
    }

    /// CKM_AES_GCM decryption and tag check of `ciphertext` into `output`. Returns the bytes written.
    func gcmDecrypt(key: CK_OBJECT_HANDLE, iv: [UInt8], aad: [UInt8], ciphertext: UnsafeRawBufferPointer,
                    into output: UnsafeMutableRawBufferPointer) throws(PKCS11Failure) -> Int {
        try withGCM(iv: iv, aad: aad) { (mechanism) throws(PKCS11Failure) in
            try check("C_DecryptInit", f.C_DecryptInit!(handle, mechanism, key))
            var outLen = CK_ULONG(output.count)
            try check("C_Decrypt", f.C_Decrypt!(handle, UnsafeMutablePointer(mutating: ciphertext.bindMemory(to: UInt8.self).baseAddress),
                                                CK_ULONG(ciphertext.count), output.bindMemory(to: UInt8.self).baseAddress, &outLen))
            return Int(outLen)
        }
    }

    private func withGCM<R>(iv: [UInt8], aad: [UInt8],
                            _ body: (UnsafeMutablePointer<CK_MECHANISM>) throws(PKCS11Failure) -> R) throws(PKCS11Failure) -> R {
        try withRawCopy(iv) { (ivp) throws(PKCS11Failure) -> R in
            try withRawCopy(aad) { (aadp) throws(PKCS11Failure) -> R in
                var params = CK_GCM_PARAMS(pIv: ivp.bindMemory(to: UInt8.self).baseAddress, ulIvLen: CK_ULONG(ivp.count),
                                           ulIvBits: CK_ULONG(ivp.count * 8), pAAD: aadp.bindMemory(to: UInt8.self).baseAddress,
                                           ulAADLen: CK_ULONG(aadp.count), ulTagBits: 128)
                return try withUnsafeMutablePointer(to: &params) { (pp) throws(PKCS11Failure) -> R in
                    var mechanism = CK_MECHANISM(mechanism: CKM_AES_GCM, pParameter: UnsafeMutableRawPointer(pp),
                                                 ulParameterLen: CK_ULONG(MemoryLayout<CK_GCM_PARAMS>.size))
                    return try body(&mechanism)
                }
            }
        }
    }
}

/// An attribute template built from Swift values; the C array and its values live only inside
/// `withAttributes`.
struct Template {
    private var items: [(CK_ATTRIBUTE_TYPE, [UInt8])] = []

    init() {}

    func bool(_ type: CK_ATTRIBUTE_TYPE, _ value: Bool) -> Template {
        adding(type, [value ? 1 : 0])
    }

    func ulong(_ type: CK_ATTRIBUTE_TYPE, _ value: CK_ULONG) -> Template {
        adding(type, withUnsafeBytes(of: value, Array.init))
    }

    func text(_ type: CK_ATTRIBUTE_TYPE, _ value: String) -> Template {
        adding(type, Array(value.utf8))
    }

    func bytes(_ type: CK_ATTRIBUTE_TYPE, _ value: [UInt8]) -> Template {
        adding(type, value)
    }

    private func adding(_ type: CK_ATTRIBUTE_TYPE, _ bytes: [UInt8]) -> Template {
        var copy = self
        copy.items.append((type, bytes))
        return copy
    }

    func withAttributes<R>(_ body: (UnsafeMutablePointer<CK_ATTRIBUTE>, CK_ULONG) throws(PKCS11Failure) -> R) throws(PKCS11Failure) -> R {
        let total = items.reduce(0) { $0 + $1.1.count }
        let storage = UnsafeMutableRawBufferPointer.allocate(byteCount: max(total, 1), alignment: 16)
        defer { storage.deallocate() }
        var attributes: [CK_ATTRIBUTE] = []
        var at = 0
        for (type, bytes) in items {
            let slot = UnsafeMutableRawBufferPointer(rebasing: storage[at..<(at + bytes.count)])
            slot.copyBytes(from: bytes)
            attributes.append(CK_ATTRIBUTE(type: type, pValue: slot.baseAddress, ulValueLen: CK_ULONG(bytes.count)))
            at += bytes.count
        }
        let array = UnsafeMutablePointer<CK_ATTRIBUTE>.allocate(capacity: max(attributes.count, 1))
        defer { array.deallocate() }
        for (i, a) in attributes.enumerated() { (array + i).initialize(to: a) }
        return try body(array, CK_ULONG(attributes.count))
    }
}
