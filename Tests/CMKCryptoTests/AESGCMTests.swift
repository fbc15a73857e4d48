import XCTest
@testable import CMKCrypto

/// A known-answer vector for AES-256-GCM with a 96-bit IV.
struct GCMVector {
    let name: String
    let key: [UInt8]
    let iv: [UInt8]
    let aad: [UInt8]
    let plaintext: [UInt8]
    let ciphertext: [UInt8]
    let tag: [UInt8]
}

/// McGrew & Viega, "The Galois/Counter Mode of Operation (GCM)", test cases 13–16 (the 256-bit
/// key cases, also in NIST's GCM validation material), typed in from the paper.
let mcGrewViega: [GCMVector] = [
    GCMVector(
        name: "Test Case 13 (zero key, empty plaintext, no AAD)",
        key: h("00000000000000000000000000000000 00000000000000000000000000000000"),
        iv: h("000000000000000000000000"),
        aad: [],
        plaintext: [],
        ciphertext: [],
        tag: h("530f8afbc74536b9a963b4f1c4cb738b")),
    GCMVector(
        name: "Test Case 14 (zero key, one zero block, no AAD)",
        key: h("00000000000000000000000000000000 00000000000000000000000000000000"),
        iv: h("000000000000000000000000"),
        aad: [],
        plaintext: h("00000000000000000000000000000000"),
        ciphertext: h("cea7403d4d606b6e074ec5d3baf39d18"),
        tag: h("d0d1c8a799996bf0265b98b5d48ab919")),
    GCMVector(
        name: "Test Case 15 (64-byte plaintext, no AAD)",
        key: h("feffe9928665731c6d6a8f9467308308 feffe9928665731c6d6a8f9467308308"),
        iv: h("cafebabefacedbaddecaf888"),
        aad: [],
        plaintext: h("""
            d9313225f88406e5a55909c5aff5269a 86a7a9531534f7da2e4c303d8a318a72 \
            1c3c0c95956809532fcf0e2449a6b525 b16aedf5aa0de657ba637b391aafd255
            """),
        ciphertext: h("""
            522dc1f099567d07f47f37a32a84427d 643a8cdcbfe5c0c97598a2bd2555d1aa \
            8cb08e48590dbb3da7b08b1056828838 c5f61e6393ba7a0abcc9f662898015ad
            """),
        tag: h("b094dac5d93471bdec1a502270e3cc6c")),
    GCMVector(
        name: "Test Case 16 (60-byte plaintext, 20-byte AAD)",
        key: h("feffe9928665731c6d6a8f9467308308 feffe9928665731c6d6a8f9467308308"),
        iv: h("cafebabefacedbaddecaf888"),
        aad: h("feedfacedeadbeeffeedfacedeadbeef abaddad2"),
        plaintext: h("""
            d9313225f88406e5a55909c5aff5269a 86a7a9531534f7da2e4c303d8a318a72 \
            1c3c0c95956809532fcf0e2449a6b525 b16aedf5aa0de657ba637b39
            """),
        ciphertext: h("""
            522dc1f099567d07f47f37a32a84427d 643a8cdcbfe5c0c97598a2bd2555d1aa \
            8cb08e48590dbb3da7b08b1056828838 c5f61e6393ba7a0abcc9f662
            """),
        tag: h("76fc6ece0f4e1768cddf8853bb2d551b")),
]

final class AESGCMTests: XCTestCase {
    func testVectorsAreWellFormed() {
        for v in mcGrewViega {
            XCTAssertEqual(v.key.count, 32, v.name)
            XCTAssertEqual(v.iv.count, 12, v.name)
            XCTAssertEqual(v.ciphertext.count, v.plaintext.count, v.name)
            XCTAssertEqual(v.tag.count, 16, v.name)
        }
        XCTAssertEqual(mcGrewViega[3].plaintext.count, 60)
        XCTAssertEqual(mcGrewViega[3].aad.count, 20)
    }

    func testSealMatchesKnownAnswers() throws {
        let cipher = AESGCM()
        for v in mcGrewViega {
            let (c, t) = try gcmSeal(cipher, key: v.key, iv: v.iv, aad: v.aad, plaintext: v.plaintext)
            XCTAssertEqual(c, v.ciphertext, "ciphertext of \(v.name)")
            XCTAssertEqual(t, v.tag, "tag of \(v.name)")
        }
    }

    func testOpenMatchesKnownAnswers() {
        let cipher = AESGCM()
        for v in mcGrewViega {
            let (p, error) = gcmOpen(cipher, key: v.key, iv: v.iv, aad: v.aad, ciphertext: v.ciphertext, tag: v.tag)
            XCTAssertNil(error, v.name)
            XCTAssertEqual(p, v.plaintext, v.name)
        }
    }

    /// One context re-keyed for every call (as the workers use it) still gives the vectors, in any order.
    func testContextReuseAcrossKeysAndDirections() throws {
        let cipher = AESGCM()
        for round in 0..<3 {
            for v in (round % 2 == 0 ? mcGrewViega : mcGrewViega.reversed()) {
                let (c, t) = try gcmSeal(cipher, key: v.key, iv: v.iv, aad: v.aad, plaintext: v.plaintext)
                XCTAssertEqual(c, v.ciphertext, v.name)
                XCTAssertEqual(t, v.tag, v.name)
                let bad = gcmOpen(cipher, key: v.key, iv: v.iv, aad: v.aad + [1], ciphertext: v.ciphertext, tag: v.tag)
                XCTAssertEqual(bad.error as? CryptoError, .authenticationFailed, v.name)
                let (p, error) = gcmOpen(cipher, key: v.key, iv: v.iv, aad: v.aad, ciphertext: v.ciphertext, tag: v.tag)
                XCTAssertNil(error, v.name)
                XCTAssertEqual(p, v.plaintext, v.name)
            }
        }
    }

    /// The context keeps its cipher between calls and sets it again after `reset()` (which the
    /// mount calls when keys are dropped): known answers either side of every reset.
    func testContextReuseAcrossResets() throws {
        let cipher = AESGCM()
        for v in mcGrewViega + mcGrewViega {
            let (p, error) = gcmOpen(cipher, key: v.key, iv: v.iv, aad: v.aad, ciphertext: v.ciphertext, tag: v.tag)
            XCTAssertNil(error, v.name)
            XCTAssertEqual(p, v.plaintext, v.name)
            cipher.reset()
            let (c, t) = try gcmSeal(cipher, key: v.key, iv: v.iv, aad: v.aad, plaintext: v.plaintext)
            XCTAssertEqual(c, v.ciphertext, v.name)
            XCTAssertEqual(t, v.tag, v.name)
            cipher.reset()
            cipher.reset()
        }
    }

    private func assertRejected(_ result: (output: [UInt8], error: Error?), _ what: String,
                                file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(result.error as? CryptoError, .authenticationFailed, what, file: file, line: line)
        XCTAssertEqual(result.output, [UInt8](repeating: 0, count: result.output.count),
                       "\(what): output must be wiped", file: file, line: line)
    }

    func testOpenRejectsEveryFlippedCiphertextBitAndWipesOutput() {
        let cipher = AESGCM()
        for v in mcGrewViega where !v.ciphertext.isEmpty {
            for byte in 0..<v.ciphertext.count {
                for bit in [0, 3, 7] {
                    var c = v.ciphertext
                    c[byte] ^= UInt8(1 << bit)
                    assertRejected(gcmOpen(cipher, key: v.key, iv: v.iv, aad: v.aad, ciphertext: c, tag: v.tag),
                                   "\(v.name) ciphertext byte \(byte) bit \(bit)")
                }
            }
        }
    }

    func testOpenRejectsEveryFlippedTagBit() {
        let cipher = AESGCM()
        for v in mcGrewViega {
            for bit in 0..<(16 * 8) {
                var t = v.tag
                t[bit / 8] ^= UInt8(1 << (bit % 8))
                assertRejected(gcmOpen(cipher, key: v.key, iv: v.iv, aad: v.aad, ciphertext: v.ciphertext, tag: t),
                               "\(v.name) tag bit \(bit)")
            }
        }
    }

    func testOpenRejectsWrongAAD() {
        let cipher = AESGCM()
        let v = mcGrewViega[3]
        var flipped = v.aad
        flipped[19] ^= 0x01
        for aad in [[], flipped, Array(v.aad.dropLast()), v.aad + [0]] {
            assertRejected(gcmOpen(cipher, key: v.key, iv: v.iv, aad: aad, ciphertext: v.ciphertext, tag: v.tag),
                           "AAD \(aad)")
        }
        // AAD added where there was none.
        let v15 = mcGrewViega[2]
        assertRejected(gcmOpen(cipher, key: v15.key, iv: v15.iv, aad: [0], ciphertext: v15.ciphertext, tag: v15.tag),
                       "AAD added")
    }

    func testOpenRejectsWrongKeyAndWrongNonce() {
        let cipher = AESGCM()
        for v in mcGrewViega {
            var key = v.key
            key[31] ^= 0x80
            assertRejected(gcmOpen(cipher, key: key, iv: v.iv, aad: v.aad, ciphertext: v.ciphertext, tag: v.tag),
                           "\(v.name) wrong key")
            var iv = v.iv
            iv[0] ^= 0x01
            assertRejected(gcmOpen(cipher, key: v.key, iv: iv, aad: v.aad, ciphertext: v.ciphertext, tag: v.tag),
                           "\(v.name) wrong nonce")
        }
    }

    func testRejectsKeysOfWrongLength() {
        let cipher = AESGCM()
        let v = mcGrewViega[2]
        for length in [0, 16, 24, 31, 33] {
            let key = [UInt8](repeating: 7, count: length)
            XCTAssertThrowsError(try gcmSeal(cipher, key: key, iv: v.iv, aad: [], plaintext: v.plaintext)) {
                XCTAssertEqual($0 as? CryptoError, .badLength(what: "AES-256 key", expected: 32, got: length))
            }
            let result = gcmOpen(cipher, key: key, iv: v.iv, aad: [], ciphertext: v.ciphertext, tag: v.tag)
            XCTAssertEqual(result.error as? CryptoError, .badLength(what: "AES-256 key", expected: 32, got: length))
        }
        // The context is still usable afterwards.
        let (p, error) = gcmOpen(cipher, key: v.key, iv: v.iv, aad: v.aad, ciphertext: v.ciphertext, tag: v.tag)
        XCTAssertNil(error)
        XCTAssertEqual(p, v.plaintext)
    }

    func testLargeBufferRoundTrip() throws {
        let cipher = AESGCM()
        let key = try SecureRandom.bytes(32), iv = try SecureRandom.bytes(12)
        let plaintext = (0..<70_000).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
        let (c, t) = try gcmSeal(cipher, key: key, iv: iv, aad: [1, 2, 3], plaintext: plaintext)
        XCTAssertNotEqual(c, plaintext)
        let (p, error) = gcmOpen(cipher, key: key, iv: iv, aad: [1, 2, 3], ciphertext: c, tag: t)
        XCTAssertNil(error)
        XCTAssertEqual(p, plaintext)
    }

    // MARK: records

    func testRecordRoundTrip() throws {
        let cipher = AESGCM()
        let key = try SecretBytes.random(count: 32)
        for (aad, length) in [([UInt8](), 1), (Array("ctx".utf8), 32), ([UInt8](repeating: 9, count: 300), 1000)] {
            let plaintext = (0..<length).map { UInt8(truncatingIfNeeded: $0 * 7 + 1) }
            let record = try key.withUnsafeBytes { k in
                try plaintext.withUnsafeBytes { p in try cipher.sealRecord(key: k, aad: aad, plaintext: p) }
            }
            XCTAssertEqual(record.count, AESGCM.nonceSize + length + AESGCM.tagSize)
            let opened = try key.withUnsafeBytes { k in try cipher.openRecord(key: k, aad: aad, record: record) }
            XCTAssertEqual(opened.count, length)
            XCTAssertEqual(opened.testBytes, plaintext)
        }
    }

    func testRecordsUseFreshNonces() throws {
        let cipher = AESGCM()
        let key = try SecretBytes.random(count: 32)
        let plaintext = [UInt8](repeating: 0x42, count: 32)
        var seen = Set<[UInt8]>()
        for _ in 0..<100 {
            let record = try key.withUnsafeBytes { k in
                try plaintext.withUnsafeBytes { p in try cipher.sealRecord(key: k, aad: [], plaintext: p) }
            }
            XCTAssertTrue(seen.insert(Array(record.prefix(12))).inserted, "nonce repeated")
            XCTAssertNotEqual(Array(record[12..<44]), plaintext, "plaintext visible in record")
        }
    }

    func testRecordTamperWrongAADWrongKeyAndTruncation() throws {
        let cipher = AESGCM()
        let key = try SecretBytes.random(count: 32), other = try SecretBytes.random(count: 32)
        let aad = Array("file-1".utf8)
        let plaintext = (0..<32).map { UInt8($0) }
        let record = try key.withUnsafeBytes { k in
            try plaintext.withUnsafeBytes { p in try cipher.sealRecord(key: k, aad: aad, plaintext: p) }
        }
        // Every byte of nonce, body and tag is covered.
        for i in 0..<record.count {
            var bad = record
            bad[i] ^= 0x10
            XCTAssertThrowsError(try key.withUnsafeBytes { k in try cipher.openRecord(key: k, aad: aad, record: bad) },
                                 "byte \(i)") {
                XCTAssertEqual($0 as? CryptoError, .authenticationFailed)
            }
        }
        XCTAssertThrowsError(try key.withUnsafeBytes { k in
            try cipher.openRecord(key: k, aad: Array("file-2".utf8), record: record)
        }) { XCTAssertEqual($0 as? CryptoError, .authenticationFailed) }
        XCTAssertThrowsError(try key.withUnsafeBytes { k in try cipher.openRecord(key: k, aad: [], record: record) }) {
            XCTAssertEqual($0 as? CryptoError, .authenticationFailed)
        }
        XCTAssertThrowsError(try other.withUnsafeBytes { k in try cipher.openRecord(key: k, aad: aad, record: record) }) {
            XCTAssertEqual($0 as? CryptoError, .authenticationFailed)
        }
        // Cut off the last byte: the tag moves, authentication fails.
        XCTAssertThrowsError(try key.withUnsafeBytes { k in
            try cipher.openRecord(key: k, aad: aad, record: Array(record.dropLast()))
        }) { XCTAssertEqual($0 as? CryptoError, .authenticationFailed) }
        // Too short to hold nonce, tag and one byte.
        for length in [0, 1, 27, 28] {
            XCTAssertThrowsError(try key.withUnsafeBytes { k in
                try cipher.openRecord(key: k, aad: aad, record: Array(record.prefix(length)))
            }, "length \(length)") {
                guard case .badLength? = $0 as? CryptoError else { return XCTFail("expected badLength, got \($0)") }
            }
        }
        // The original still opens.
        let opened = try key.withUnsafeBytes { k in try cipher.openRecord(key: k, aad: aad, record: record) }
        XCTAssertEqual(opened.testBytes, plaintext)
    }

    func testRecordIsStandardGCM() throws {
        // nonce ‖ ciphertext ‖ tag, exactly what plain seal gives for that nonce.
        let cipher = AESGCM()
        let v = mcGrewViega[3]
        let record = try v.key.withUnsafeBytes { k in
            try v.plaintext.withUnsafeBytes { p in try cipher.sealRecord(key: k, aad: v.aad, plaintext: p) }
        }
        let nonce = Array(record.prefix(12))
        let (c, t) = try gcmSeal(cipher, key: v.key, iv: nonce, aad: v.aad, plaintext: v.plaintext)
        XCTAssertEqual(record, nonce + c + t)
        let known = try v.key.withUnsafeBytes { k in try cipher.openRecord(key: k, aad: v.aad, record: v.iv + v.ciphertext + v.tag) }
        XCTAssertEqual(known.testBytes, v.plaintext)
    }
}

/// AES-256-SIV and SHA-256 through EVP.
final class AESSIVTests: XCTestCase {
    func testSealOpenDeterministicAndAuthenticated() throws {
        let key = try SecretBytes.random(count: 64)
        let plain = Array("payroll-2026-q3.xlsx".utf8)
        let a = try AESSIV.seal(key: key, associatedData: [[1, 2], [3]], plaintext: plain)
        XCTAssertEqual(a.count, plain.count + 16)
        XCTAssertEqual(try AESSIV.seal(key: key, associatedData: [[1, 2], [3]], plaintext: plain), a)
        XCTAssertNotEqual(try AESSIV.seal(key: key, associatedData: [[1, 2], [4]], plaintext: plain), a)
        XCTAssertNotEqual(try AESSIV.seal(key: key, associatedData: [[1], [2, 3]], plaintext: plain), a, "components are framed")
        XCTAssertEqual(try AESSIV.open(key: key, associatedData: [[1, 2], [3]], sealed: a), plain)
        for i in [0, 15, 16, a.count - 1] {
            var bad = a
            bad[i] ^= 1
            XCTAssertThrowsError(try AESSIV.open(key: key, associatedData: [[1, 2], [3]], sealed: bad)) {
                XCTAssertEqual($0 as? CryptoError, .authenticationFailed)
            }
        }
        XCTAssertThrowsError(try AESSIV.open(key: key, associatedData: [[1, 2]], sealed: a))
        XCTAssertThrowsError(try AESSIV.seal(key: try SecretBytes.random(count: 32), associatedData: [], plaintext: plain))
    }

    /// A known answer from an independent binding (Python `cryptography`'s AESSIV, which also
    /// outputs `tag ‖ ciphertext`): key 00 01 … 3f, AAD ["cmkfs.name.v1", 16 × 01].
    func testKnownAnswer() throws {
        let key = SecretBytes(zeroedCount: 64)
        key.withUnsafeMutableBytes { for i in 0..<64 { $0[i] = UInt8(i) } }
        let sealed = try AESSIV.seal(key: key, associatedData: [Array("cmkfs.name.v1".utf8), [UInt8](repeating: 1, count: 16)],
                                     plaintext: Array("payroll-2026-q3.xlsx".utf8))
        XCTAssertEqual(sealed, h("a274e3382473f4495bf36c038045ee07c1547bfffbf6305ade930d9c0d0677acde266087"))
    }

    func testSHA256KnownAnswer() throws {
        XCTAssertEqual(try SHA256.hash(Array("abc".utf8)), h("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"))
        XCTAssertEqual(try SHA256.hash([]), h("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"))
    }
}
