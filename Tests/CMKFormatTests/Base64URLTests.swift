import XCTest
@testable import CMKFormat

/// The table-driven base64url against the bit-at-a-time codec it replaced (kept here as the
/// reference): the same encoding of every input, and the same answer, bytes or nil, for every
/// string, so backing names written before decode as before and nothing rejected before is
/// accepted now.
final class Base64URLTests: XCTestCase {
    func testEncodeMatchesTheReferenceAndRoundTripsAtEveryLength() {
        var rng = SplitMix64(seed: 20)
        for n in 0..<300 {
            for _ in 0..<4 {
                let bytes = rng.bytes(n)
                let encoded = Base64URL.encode(bytes)
                XCTAssertEqual(encoded, Reference.encode(bytes), "length \(n)")
                XCTAssertEqual(encoded.utf8.count, Base64URL.encodedCount(n))
                XCTAssertEqual(Base64URL.decode(encoded), bytes, "length \(n) (\(n % 3) mod 3)")
            }
        }
        XCTAssertEqual(Base64URL.encode(Array("hi?>".utf8)), "aGk_Pg")
        XCTAssertEqual(Base64URL.encode((0...255).map { UInt8($0) }), Reference.encode((0...255).map { UInt8($0) }))
    }

    /// Every byte value at every position of strings of 1 to 9 characters (every length mod 4),
    /// around a valid encoding: accepted or rejected exactly as the reference does.
    func testEveryByteAtEveryPositionDecodesAsTheReferenceDoes() {
        var rng = SplitMix64(seed: 6)
        for length in 1...9 {
            let base = Array(Base64URL.encode(rng.bytes(length * 3 / 4 + 1)).utf8.prefix(length))
            for position in 0..<length {
                for value in 0...255 {
                    var chars = base
                    chars[position] = UInt8(value)
                    let expected = Reference.decode(chars)
                    let got = chars.withUnsafeBufferPointer { Base64URL.decode($0) }
                    XCTAssertEqual(got, expected, "byte \(value) at \(position) of \(length)")
                    if value < 128 { XCTAssertEqual(Base64URL.decode(String(decoding: chars, as: UTF8.self)), expected) }
                }
            }
        }
    }

    func testInvalidEncodingsAreRejected() {
        XCTAssertNil(Base64URL.decode("a"), "a dangling character")
        XCTAssertNil(Base64URL.decode("aGk_Pgxyz"), "length 1 mod 4")
        XCTAssertNil(Base64URL.decode("aGk_Ph"), "non-zero spare bits after three characters")
        XCTAssertNil(Base64URL.decode("aGl"), "non-zero spare bits after three characters")
        XCTAssertNil(Base64URL.decode("aR"), "non-zero spare bits after two characters")
        XCTAssertNil(Base64URL.decode("aGk+Pg"), "standard base64's alphabet")
        XCTAssertNil(Base64URL.decode("aGk_Pg=="), "padding")
        XCTAssertNil(Base64URL.decode("aGk_Pg.."), "a long name's prefix character")
        XCTAssertNil(Base64URL.decode("aGké"), "a non-ASCII character")
        XCTAssertEqual(Base64URL.decode(""), [])
        XCTAssertEqual(Base64URL.decode("aQ"), [0x69])
    }

    /// The codec before issue 20's table-driven one, verbatim in behaviour.
    enum Reference {
        static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)

        static func encode(_ bytes: [UInt8]) -> String {
            var out = [UInt8]()
            var i = 0
            while i + 3 <= bytes.count {
                let v = UInt32(bytes[i]) << 16 | UInt32(bytes[i + 1]) << 8 | UInt32(bytes[i + 2])
                out += [alphabet[Int(v >> 18)], alphabet[Int(v >> 12 & 63)], alphabet[Int(v >> 6 & 63)], alphabet[Int(v & 63)]]
                i += 3
            }
            let rest = bytes.count - i
            if rest == 1 {
                let v = UInt32(bytes[i]) << 16
                out += [alphabet[Int(v >> 18)], alphabet[Int(v >> 12 & 63)]]
            } else if rest == 2 {
                let v = UInt32(bytes[i]) << 16 | UInt32(bytes[i + 1]) << 8
                out += [alphabet[Int(v >> 18)], alphabet[Int(v >> 12 & 63)], alphabet[Int(v >> 6 & 63)]]
            }
            return String(decoding: out, as: UTF8.self)
        }

        static func decode(_ chars: [UInt8]) -> [UInt8]? {
            guard chars.count % 4 != 1 else { return nil }
            var out = [UInt8]()
            var acc: UInt32 = 0, bits = 0
            for c in chars {
                guard let v = alphabet.firstIndex(of: c) else { return nil }
                acc = acc << 6 | UInt32(v)
                bits += 6
                if bits >= 8 {
                    bits -= 8
                    out.append(UInt8(truncatingIfNeeded: acc >> UInt32(bits)))
                    acc &= (1 << UInt32(bits)) - 1
                }
            }
            guard acc == 0 else { return nil }
            return out
        }
    }
}
