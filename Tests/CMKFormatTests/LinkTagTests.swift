import Foundation
import Synchronization
import XCTest
import CMKCrypto
@testable import CMKFormat

/// Name bindings through the codec's pool of keyed HMAC contexts: the same tags as before (they
/// are stored in meta.db for every file), from any number of threads at once.
final class LinkTagTests: XCTestCase {
    /// Known answer, computed outside cmkfs (Python's hmac): HMAC-SHA256(HMAC-SHA256(name key,
    /// "cmkfs.link-key.v1"), "cmkfs.link.v1" ‖ file id ‖ directory id ‖ backing name)[0..<16].
    func testLinkTagKnownAnswer() throws {
        let key = SecretBytes(zeroedCount: 64)
        key.withUnsafeMutableBytes { for i in 0..<64 { $0[i] = UInt8(i) } }
        let codec = try NameCodec(key: key)
        for _ in 0..<3 {
            let tag = try codec.linkTag(fileID: Array(1...16), directoryID: Array(17...32), backingName: "AAAAbackingname")
            XCTAssertEqual(tag.map { String(format: "%02x", $0) }.joined(), "8c99880810ac109764e2666e8056caf4")
        }
    }

    /// Threads racing for the pool's contexts each get the one-shot MAC's tag for their own
    /// message: a context is never shared mid-message, and every message starts afresh.
    func testTagsFromManyThreadsMatchTheOneShotMAC() throws {
        let codec = try NameCodec(key: try SecretBytes.random(count: 64))
        let threads = 8, perThread = 400
        let mismatches = Mutex(0)
        DispatchQueue.concurrentPerform(iterations: threads) { t in
            for i in 0..<perThread {
                let fileID = (0..<16).map { UInt8(truncatingIfNeeded: t * 31 + i + $0) }
                let directoryID = (0..<16).map { UInt8(truncatingIfNeeded: i * 7 + $0) }
                let name = "entry-\(t)-\(i)" + String(repeating: "x", count: i % 40)
                let tag = try? codec.linkTag(fileID: fileID, directoryID: directoryID, backingName: name)
                let expected = try? HMACSHA256.mac(key: codec.bindKey, NameCodec.bindLabel, fileID, directoryID, Array(name.utf8)).prefix(16)
                if tag == nil || expected == nil || tag! != Array(expected!) { mismatches.withLock { $0 += 1 } }
            }
        }
        XCTAssertEqual(mismatches.withLock { $0 }, 0)
        XCTAssertGreaterThan(codec.bindMACs.idleCount, 0)
        XCTAssertLessThanOrEqual(codec.bindMACs.idleCount, 8)
    }
}
