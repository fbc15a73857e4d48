/// Base64 (RFC 4648) encoding through a 64-character table on raw buffers, written straight
/// into the result's storage: one allocation per call (the result), no per-character array.
/// Shared by the base64url of encrypted names (CMKFormat's `Base64URL`, unpadded) and the
/// padded standard base64 of an audit record's sealed path (CMKAudit), both on hot paths.
public enum Base64Table {
    /// RFC 4648 §4.
    public static let standard = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
    /// RFC 4648 §5: safe in file names.
    public static let url = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)

    /// Characters in the encoding of `count` bytes, with or without `=` padding.
    public static func encodedCount(_ count: Int, padded: Bool) -> Int {
        padded ? (count + 2) / 3 * 4 : (count * 4 + 2) / 3
    }

    /// `bytes` in the 64 characters of `alphabet` (`standard` or `url`), padded with `=` to a
    /// multiple of four characters when `padded`.
    public static func encode(_ bytes: UnsafeRawBufferPointer, alphabet: [UInt8], padded: Bool) -> String {
        precondition(alphabet.count == 64)
        let count = encodedCount(bytes.count, padded: padded)
        guard count > 0 else { return "" }
        return String(unsafeUninitializedCapacity: count) { out in
            alphabet.withUnsafeBufferPointer { table in
                var i = 0, o = 0
                while i + 3 <= bytes.count {
                    let v = UInt32(bytes[i]) << 16 | UInt32(bytes[i + 1]) << 8 | UInt32(bytes[i + 2])
                    out[o] = table[Int(v >> 18)]
                    out[o + 1] = table[Int(v >> 12 & 63)]
                    out[o + 2] = table[Int(v >> 6 & 63)]
                    out[o + 3] = table[Int(v & 63)]
                    i += 3
                    o += 4
                }
                let rest = bytes.count - i
                guard rest > 0 else { return }
                let v = UInt32(bytes[i]) << 16 | (rest == 2 ? UInt32(bytes[i + 1]) << 8 : 0)
                out[o] = table[Int(v >> 18)]
                out[o + 1] = table[Int(v >> 12 & 63)]
                if rest == 2 { out[o + 2] = table[Int(v >> 6 & 63)] }
                if padded {
                    if rest == 1 { out[o + 2] = UInt8(ascii: "=") }
                    out[o + 3] = UInt8(ascii: "=")
                }
            }
            return count
        }
    }
}
