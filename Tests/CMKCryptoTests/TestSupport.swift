import XCTest
@testable import CMKCrypto

/// Bytes from hex in a test vector; spaces are ignored. Traps on a malformed vector.
func h(_ text: String) -> [UInt8] {
    let chars = Array(text.utf8.filter { $0 != UInt8(ascii: " ") })
    precondition(chars.count % 2 == 0, "odd-length hex in a test vector")
    func nibble(_ c: UInt8) -> UInt8 {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
        default: preconditionFailure("bad hex digit in a test vector")
        }
    }
    return stride(from: 0, to: chars.count, by: 2).map { nibble(chars[$0]) << 4 | nibble(chars[$0 + 1]) }
}

/// A heap buffer of at least one byte (so pointers are never nil) holding `bytes`.
final class Buffer {
    let raw: UnsafeMutableRawBufferPointer
    let count: Int

    init(_ bytes: [UInt8]) {
        count = bytes.count
        raw = .allocate(byteCount: max(bytes.count, 1), alignment: 16)
        raw.initializeMemory(as: UInt8.self, repeating: 0)
        raw.copyBytes(from: bytes)
    }

    convenience init(count: Int, filling byte: UInt8) {
        self.init([UInt8](repeating: byte, count: count))
    }

    deinit { raw.deallocate() }

    var pointer: UnsafeMutableRawPointer { raw.baseAddress! }
    var view: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: raw.baseAddress!, count: count) }
    var bytes: [UInt8] { Array(view) }
}

/// Seals with a fresh context; returns (ciphertext, tag).
func gcmSeal(_ cipher: AESGCM, key: [UInt8], iv: [UInt8], aad: [UInt8], plaintext: [UInt8]) throws -> ([UInt8], [UInt8]) {
    let k = Buffer(key), n = Buffer(iv), a = Buffer(aad), p = Buffer(plaintext)
    let c = Buffer(count: plaintext.count, filling: 0xEE), t = Buffer(count: AESGCM.tagSize, filling: 0xEE)
    try cipher.seal(key: k.view, nonce: n.pointer, aad: a.view, plaintext: p.view, ciphertext: c.pointer, tag: t.pointer)
    return (c.bytes, t.bytes)
}

/// Opens into a buffer pre-filled with 0xAA; returns the buffer whatever happens, and the error if any.
func gcmOpen(_ cipher: AESGCM, key: [UInt8], iv: [UInt8], aad: [UInt8], ciphertext: [UInt8], tag: [UInt8]) -> (output: [UInt8], error: Error?) {
    let k = Buffer(key), n = Buffer(iv), a = Buffer(aad), c = Buffer(ciphertext), t = Buffer(tag)
    let p = Buffer(count: ciphertext.count, filling: 0xAA)
    do {
        try cipher.open(key: k.view, nonce: n.pointer, aad: a.view, ciphertext: c.view, tag: t.pointer, plaintext: p.pointer)
        return (p.bytes, nil)
    } catch {
        return (p.bytes, error)
    }
}

extension SecretBytes {
    var testBytes: [UInt8] { withUnsafeBytes { Array($0) } }
}
