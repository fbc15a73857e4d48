import COpenSSL
import CMKCrypto
import CMKHTTP

/// Standard base64 (with padding) over OpenSSL's EVP codec, for the secret-bearing parts of
/// transit requests and answers: a DEK is encoded straight into a wiped request body and decoded
/// straight into a `SecretBytes`, never through a Swift string.
enum Base64 {
    /// Appends base64(`bytes`) to `body`.
    static func append(_ bytes: UnsafeRawBufferPointer, to body: HTTPBody) {
        guard bytes.count > 0 else { return }
        let encoded = UnsafeMutableRawBufferPointer.allocate(byteCount: 4 * ((bytes.count + 2) / 3) + 1, alignment: 16)
        defer { secureZero(encoded); encoded.deallocate() }
        let n = EVP_EncodeBlock(encoded.baseAddress!.assumingMemoryBound(to: UInt8.self),
                                bytes.baseAddress!.assumingMemoryBound(to: UInt8.self), Int32(bytes.count))
        body.append(UnsafeRawBufferPointer(rebasing: encoded[0..<Int(n)]))
    }

    /// base64 of non-secret bytes as a string.
    static func encode(_ bytes: [UInt8]) -> String {
        let body = HTTPBody()
        bytes.withUnsafeBytes { append($0, to: body) }
        return body.text
    }

    /// Decodes `text` (standard alphabet, padded) into a secret; nil if it is not base64.
    static func decodeSecret(_ text: UnsafeRawBufferPointer) -> SecretBytes? {
        guard text.count > 0, text.count % 4 == 0 else { return nil }
        let padding = (text[text.count - 1] == UInt8(ascii: "=") ? 1 : 0) + (text[text.count - 2] == UInt8(ascii: "=") ? 1 : 0)
        let decoded = UnsafeMutableRawBufferPointer.allocate(byteCount: text.count / 4 * 3, alignment: 16)
        defer { secureZero(decoded); decoded.deallocate() }
        let n = EVP_DecodeBlock(decoded.baseAddress!.assumingMemoryBound(to: UInt8.self),
                                text.baseAddress!.assumingMemoryBound(to: UInt8.self), Int32(text.count))
        guard n >= 0, Int(n) - padding > 0 else { return nil }
        return SecretBytes(copying: UnsafeRawBufferPointer(rebasing: decoded[0..<(Int(n) - padding)]))
    }
}
