import XCTest
@testable import CMKCrypto

/// `seal(sameKey:)` keeps the key scheduled between calls and sets only the nonce; any call
/// that sets another key (a `seal` or an `open`) or a `reset` makes it schedule its key again.
final class AESGCMSameKeyTests: XCTestCase {
    private func sealSameKey(_ cipher: AESGCM, key: [UInt8], iv: [UInt8], aad: [UInt8], plaintext: [UInt8]) throws -> ([UInt8], [UInt8]) {
        let k = Buffer(key), n = Buffer(iv), a = Buffer(aad), p = Buffer(plaintext)
        let c = Buffer(count: plaintext.count, filling: 0xEE), t = Buffer(count: AESGCM.tagSize, filling: 0xEE)
        try cipher.seal(sameKey: k.view, nonce: n.pointer, aad: a.view, plaintext: p.view, ciphertext: c.pointer, tag: t.pointer)
        return (c.bytes, t.bytes)
    }

    /// Known answers call after call, and after another key was used on the context by an
    /// open, a seal or a reset.
    func testKnownAnswersAcrossOtherKeysOnTheContext() throws {
        let keyed = mcGrewViega.filter { $0.key != mcGrewViega[0].key }
        let other = mcGrewViega[1]
        XCTAssertFalse(keyed.isEmpty)
        let cipher = AESGCM()
        for step in 0..<8 {
            for v in keyed + keyed {
                let (c, t) = try sealSameKey(cipher, key: v.key, iv: v.iv, aad: v.aad, plaintext: v.plaintext)
                XCTAssertEqual(c, v.ciphertext, "\(v.name), step \(step)")
                XCTAssertEqual(t, v.tag, "\(v.name), step \(step)")
            }
            switch step % 3 {
            case 0: XCTAssertNil(gcmOpen(cipher, key: other.key, iv: other.iv, aad: other.aad, ciphertext: other.ciphertext, tag: other.tag).error)
            case 1: _ = try gcmSeal(cipher, key: other.key, iv: other.iv, aad: other.aad, plaintext: other.plaintext)
            default: cipher.reset()
            }
        }
    }

    /// Random nonces, lengths and associated data: the kept key seals what a fresh context
    /// keyed per call seals.
    func testKeptKeySealsWhatAFreshContextSeals() throws {
        let key = try SecureRandom.bytes(32)
        let kept = AESGCM()
        for length in 0..<200 {
            let iv = try SecureRandom.bytes(12), plaintext = try SecureRandom.bytes(length), aad = try SecureRandom.bytes(length % 20)
            let fast = try sealSameKey(kept, key: key, iv: iv, aad: aad, plaintext: plaintext)
            let reference = try gcmSeal(AESGCM(), key: key, iv: iv, aad: aad, plaintext: plaintext)
            XCTAssertEqual(fast.0, reference.0, "\(length)")
            XCTAssertEqual(fast.1, reference.1, "\(length)")
        }
    }
}
