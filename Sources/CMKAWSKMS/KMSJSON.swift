import Foundation
import COpenSSL
import CMKCrypto

/// The AWS KMS JSON 1.1 API's messages (`POST /`, `X-Amz-Target: TrentService.<Op>`).
///
/// A request or answer that carries a data key in clear (Encrypt's `Plaintext`, Decrypt's answer)
/// is built and read here byte by byte into buffers that are wiped, never through `String` or
/// `JSONSerialization`, which would leave copies of the key in memory nobody wipes.
public enum KMSJSON {
    /// The operations cmkfs uses.
    public enum Operation: String, Sendable {
        case encrypt = "Encrypt", decrypt = "Decrypt", reEncrypt = "ReEncrypt", describeKey = "DescribeKey"
        case createKey = "CreateKey", enableKey = "EnableKey", disableKey = "DisableKey"
        case scheduleKeyDeletion = "ScheduleKeyDeletion"
        public var target: String { "TrentService.\(rawValue)" }
    }

    /// A JSON string literal for `text` (quotes and escapes).
    static func quoted(_ text: String) -> [UInt8] {
        var out: [UInt8] = [0x22]
        for byte in text.utf8 {
            switch byte {
            case 0x22: out += [0x5C, 0x22]
            case 0x5C: out += [0x5C, 0x5C]
            case 0..<0x20: out += Array(String(format: "\\u%04x", byte).utf8)
            default: out.append(byte)
            }
        }
        out.append(0x22)
        return out
    }

    /// `{"k":"v",…}` over string values, keys in the given order.
    static func object(_ fields: [(String, [UInt8])]) -> [UInt8] {
        var out: [UInt8] = [0x7B]
        for (i, (key, value)) in fields.enumerated() {
            if i > 0 { out.append(0x2C) }
            out += quoted(key) + [0x3A] + value
        }
        out.append(0x7D)
        return out
    }

    static func context(_ pairs: [(String, String)]) -> [UInt8] { object(pairs.map { ($0.0, quoted($0.1)) }) }

    /// Base64 of `bytes` (OpenSSL's EVP_EncodeBlock), as the bytes of a JSON string literal.
    static func base64Literal(_ bytes: UnsafeRawBufferPointer) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 4 * ((bytes.count + 2) / 3) + 3)
        let empty: [UInt8] = [0]
        let n = out.withUnsafeMutableBufferPointer { o in
            empty.withUnsafeBufferPointer { e in
                EVP_EncodeBlock(o.baseAddress! + 1, bytes.bindMemory(to: UInt8.self).baseAddress ?? e.baseAddress!, Int32(bytes.count))
            }
        }
        out[0] = 0x22
        out[Int(n) + 1] = 0x22
        return Array(out[0..<(Int(n) + 2)])
    }

    static func base64Literal(_ bytes: [UInt8]) -> [UInt8] { bytes.withUnsafeBytes { base64Literal($0) } }

    /// The Encrypt request body. The caller wipes the returned bytes (they hold the DEK in base64).
    static func encryptBody(keyID: String, plaintext: SecretBytes, context pairs: [(String, String)]) -> [UInt8] {
        var plain = plaintext.withUnsafeBytes { base64Literal($0) }
        defer { plain.withUnsafeMutableBytes { secureZero($0) } }
        return object([("KeyId", quoted(keyID)), ("Plaintext", plain), ("EncryptionContext", context(pairs))])
    }

    /// The raw bytes of the string value of top-level `field` in `json`, unescaped only for `\/`
    /// (base64 never needs more), or nil. Does not allocate a `String` of the value.
    static func stringField(_ field: String, in json: UnsafeRawBufferPointer) -> [UInt8]? {
        let needle = quoted(field)
        let bytes = json.bindMemory(to: UInt8.self)
        guard bytes.count > needle.count else { return nil }
        var i = 0
        search: while i + needle.count <= bytes.count {
            for j in 0..<needle.count where bytes[i + j] != needle[j] { i += 1; continue search }
            var k = i + needle.count
            while k < bytes.count, [0x20, 0x09, 0x0A, 0x0D].contains(bytes[k]) { k += 1 }
            guard k < bytes.count, bytes[k] == 0x3A else { i += 1; continue }
            k += 1
            while k < bytes.count, [0x20, 0x09, 0x0A, 0x0D].contains(bytes[k]) { k += 1 }
            guard k < bytes.count, bytes[k] == 0x22 else { return nil }
            k += 1
            var value: [UInt8] = []
            while k < bytes.count, bytes[k] != 0x22 {
                if bytes[k] == 0x5C, k + 1 < bytes.count { k += 1 }
                value.append(bytes[k])
                k += 1
            }
            return k < bytes.count ? value : nil
        }
        return nil
    }

    /// Decodes base64 `text` (OpenSSL's EVP_DecodeBlock) into a secret of exactly the decoded
    /// length; nil if it is not base64. Wipes its scratch buffer.
    static func decodeSecret(_ text: [UInt8]) -> SecretBytes? {
        guard !text.isEmpty, text.count % 4 == 0 else { return nil }
        let scratch = SecretBytes(zeroedCount: text.count / 4 * 3)
        let n = scratch.withUnsafeMutableBytes { out in
            text.withUnsafeBufferPointer { EVP_DecodeBlock(out.bindMemory(to: UInt8.self).baseAddress, $0.baseAddress, Int32(text.count)) }
        }
        let padding = text.reversed().prefix(2).prefix { $0 == UInt8(ascii: "=") }.count
        let length = Int(n) - padding
        guard n >= 0, length > 0 else { return nil }
        return scratch.withUnsafeBytes { SecretBytes(copying: UnsafeRawBufferPointer(rebasing: $0[0..<length])) }
    }

    /// Decodes base64 that is not secret (a CiphertextBlob).
    static func decode(_ text: String) -> [UInt8]? { Data(base64Encoded: text).map(Array.init) }

    /// An error answer's type (the part after '#', e.g. "DisabledException") and message.
    static func error(status: Int, headers: [(name: String, value: String)], body: [UInt8]) -> (type: String, message: String) {
        let object = (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any]
        var type = (object?["__type"] as? String) ?? headers.first { $0.name.lowercased() == "x-amzn-errortype" }?.value ?? "HTTP \(status)"
        if let hash = type.lastIndex(of: "#") { type = String(type[type.index(after: hash)...]) }
        if let colon = type.firstIndex(of: ":") { type = String(type[..<colon]) }
        let message = (object?["message"] as? String) ?? (object?["Message"] as? String) ?? ""
        return (type, message)
    }
}
