import CMKCrypto

/// Base64url without padding (RFC 4648 §5): the alphabet is safe in file names.
///
/// Every LOOKUP, CREATE, UNLINK and RENAME encodes a sealed name and every READDIR entry decodes
/// one, so both work through a table on raw buffers, writing straight into the result's storage:
/// no per-character array, one allocation per call (the result). The loop once appended a
/// 4-element array per 3 bytes, most of a name encryption's cost after the cipher (issue 20).
public enum Base64URL {
    static let alphabet = Base64Table.url
    /// The value of each byte as a base64url character, `invalid` for any other byte.
    static let reverse: [UInt8] = {
        var table = [UInt8](repeating: invalid, count: 256)
        for (i, c) in alphabet.enumerated() { table[Int(c)] = UInt8(i) }
        return table
    }()
    /// Any value with a bit above the six of a character: or-ing every looked-up value and
    /// testing those bits once tells whether one character was outside the alphabet.
    static let invalid: UInt8 = 0xFF

    /// Characters in the encoding of `count` bytes.
    public static func encodedCount(_ count: Int) -> Int { Base64Table.encodedCount(count, padded: false) }

    public static func encode(_ bytes: [UInt8]) -> String {
        bytes.withUnsafeBytes { encode($0) }
    }

    public static func encode(_ bytes: UnsafeRawBufferPointer) -> String {
        Base64Table.encode(bytes, alphabet: alphabet, padded: false)
    }

    /// nil for any character outside the alphabet, a dangling character, or non-zero spare bits
    /// (so every byte string has exactly one encoding and a tampered name cannot alias another).
    public static func decode(_ text: String) -> [UInt8]? {
        var text = text
        return text.withUTF8 { decode($0) }
    }

    /// `decode` of the UTF-8 bytes of an encoding.
    public static func decode(_ chars: UnsafeBufferPointer<UInt8>) -> [UInt8]? {
        let n = chars.count
        guard n % 4 != 1 else { return nil }
        let count = n / 4 * 3 + max(n % 4 - 1, 0)
        guard count > 0 else { return [] }
        var valid = false
        let out = [UInt8](unsafeUninitializedCapacity: count) { out, initialized in
            valid = reverse.withUnsafeBufferPointer { table -> Bool in
                var seen: UInt8 = 0
                var i = 0, o = 0
                while i + 4 <= n {
                    let a = table[Int(chars[i])], b = table[Int(chars[i + 1])]
                    let c = table[Int(chars[i + 2])], d = table[Int(chars[i + 3])]
                    seen |= a | b | c | d
                    out[o] = a << 2 | b >> 4
                    out[o + 1] = b << 4 | c >> 2
                    out[o + 2] = c << 6 | d
                    i += 4
                    o += 3
                }
                // The spare bits of the last character (4 after two, 2 after three) must be zero.
                switch n - i {
                case 2:
                    let a = table[Int(chars[i])], b = table[Int(chars[i + 1])]
                    seen |= a | b | (b & 0x0F != 0 ? invalid : 0)
                    out[o] = a << 2 | b >> 4
                case 3:
                    let a = table[Int(chars[i])], b = table[Int(chars[i + 1])], c = table[Int(chars[i + 2])]
                    seen |= a | b | c | (c & 0x03 != 0 ? invalid : 0)
                    out[o] = a << 2 | b >> 4
                    out[o + 1] = b << 4 | c >> 2
                default: break
                }
                return seen & 0xC0 == 0
            }
            initialized = count
        }
        return valid ? out : nil
    }
}
