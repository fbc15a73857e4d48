import CMKCrypto

/// A file's random 128-bit identity. It lives in the file's header, keys the file's metadata rows
/// and is bound into every block's AAD and into the wrap of the file's DEK.
public struct FileID: Hashable, Sendable, CustomStringConvertible {
    public static let size = 16
    public let bytes: [UInt8]

    /// Wraps existing id bytes; fails unless exactly 16 bytes.
    public init?(bytes: [UInt8]) {
        guard bytes.count == Self.size else { return nil }
        self.bytes = bytes
    }

    /// A fresh random id.
    public static func random() throws(CryptoError) -> FileID {
        FileID(bytes: try SecureRandom.bytes(size))!
    }

    /// Lower-case hex, for logs, tools and every audit record of a key use (an id is not
    /// secret): written straight into the string's storage, no array grown per digit.
    public var description: String {
        String(unsafeUninitializedCapacity: Self.size * 2) { out in
            for (i, b) in bytes.enumerated() {
                out[2 * i] = Self.hexDigits[Int(b >> 4)]
                out[2 * i + 1] = Self.hexDigits[Int(b & 0xF)]
            }
            return Self.size * 2
        }
    }

    static let hexDigits: [UInt8] = Array("0123456789abcdef".utf8)
}

/// Lower-case hex of `bytes`.
public func hex(_ bytes: some Sequence<UInt8>) -> String {
    let digits = Array("0123456789abcdef".utf8)
    var out = [UInt8]()
    for b in bytes { out.append(digits[Int(b >> 4)]); out.append(digits[Int(b & 0xF)]) }
    return String(decoding: out, as: UTF8.self)
}

/// Bytes from lower-case or upper-case hex; nil on any other character or an odd length.
public func unhex(_ text: String) -> [UInt8]? {
    let chars = Array(text.utf8)
    guard chars.count % 2 == 0 else { return nil }
    func nibble(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
    var out = [UInt8]()
    out.reserveCapacity(chars.count / 2)
    var i = 0
    while i < chars.count {
        guard let hi = nibble(chars[i]), let lo = nibble(chars[i + 1]) else { return nil }
        out.append(hi << 4 | lo)
        i += 2
    }
    return out
}
