import Foundation
import Synchronization
import XCTest
import CMKCrypto
@testable import CMKKeys

/// `RetryingProvider` (the offline checks' wrapper: `cmkfs fsck`) must be the provider it wraps
/// in everything but patience: the audit anchor included, or fsck verifies the log against no
/// anchor and a rolled-back log passes.
final class RetryingProviderTests: XCTestCase {
    var root: String!
    let volume: [UInt8] = Array(repeating: 0xC3, count: 16)
    let quick = RetryPolicy(attempts: 4, initialDelayMilliseconds: 1, maxDelayMilliseconds: 2)

    override func setUpWithError() throws {
        try super.setUpWithError()
        root = FileManager.default.temporaryDirectory.appendingPathComponent("cmkkeys-retrying-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: false)
    }

    override func tearDown() {
        if let root { try? FileManager.default.removeItem(atPath: root) }
        root = nil
        super.tearDown()
    }

    func testTheAuditAnchorGoesThroughToTheWrappedProvider() throws {
        let kms = try SimulatedKMS(directory: root + "/kms", create: true)
        let retrying = RetryingProvider(kms, policy: quick)
        XCTAssertEqual(retrying.anchorPlace(volumeID: volume), kms.anchorPlace(volumeID: volume))
        XCTAssertNotNil(retrying.anchorPlace(volumeID: volume))
        try retrying.setAuditAnchor([1, 2, 3], seq: 7, volumeID: volume)
        XCTAssertEqual(try kms.auditAnchor(volumeID: volume), [1, 2, 3], "stored in the wrapped provider")
        try kms.setAuditAnchor([4, 5], seq: 9, volumeID: volume)
        XCTAssertEqual(try retrying.auditAnchor(volumeID: volume), [4, 5], "read from the wrapped provider")
        XCTAssertThrowsError(try retrying.setAuditAnchor([6], seq: 8, volumeID: volume), "the provider's rollback refusal is kept")
    }

    func testAnchorCallsAreRetriedThroughAnOutage() throws {
        let kms = try SimulatedKMS(directory: root + "/kms", create: true)
        try kms.setAuditAnchor([9], seq: 1, volumeID: volume)
        let flaky = FlakyAnchors(base: kms, failures: 2)
        XCTAssertEqual(try RetryingProvider(flaky, policy: quick).auditAnchor(volumeID: volume), [9])
        XCTAssertEqual(flaky.calls.withLock { $0 }, 3, "two outages, then the answer")
        let hopeless = FlakyAnchors(base: kms, failures: 100)
        XCTAssertThrowsError(try RetryingProvider(hopeless, policy: quick).setAuditAnchor([9], seq: 2, volumeID: volume)) { error in
            guard case KeyProviderError.unavailable = error else { return XCTFail("\(error)") }
        }
        XCTAssertEqual(hopeless.calls.withLock { $0 }, quick.attempts)
    }
}

/// A provider whose anchor calls are unavailable `failures` times before they reach `base`.
private final class FlakyAnchors: KeyProvider {
    let base: SimulatedKMS
    let failures: Int
    let calls = Mutex(0)
    init(base: SimulatedKMS, failures: Int) {
        self.base = base
        self.failures = failures
    }

    var kind: String { "flaky" }
    func createKey() throws(KeyProviderError) -> KeyRef { try base.createKey() }
    func createVersion(of keyID: String) throws(KeyProviderError) -> KeyRef { try base.createVersion(of: keyID) }
    func wrap(_ dek: SecretBytes, with key: KeyRef, context: WrapContext) throws(KeyProviderError) -> [UInt8] {
        try base.wrap(dek, with: key, context: context)
    }
    func unwrap(_ edek: [UInt8], with key: KeyRef, context: WrapContext) throws(KeyProviderError) -> SecretBytes {
        try base.unwrap(edek, with: key, context: context)
    }
    func state(of key: KeyRef) throws(KeyProviderError) -> ProviderKeyState { try base.state(of: key) }
    func setState(_ state: ProviderKeyState, of key: KeyRef) throws(KeyProviderError) { try base.setState(state, of: key) }
    func anchorPlace(volumeID: [UInt8]) -> String? { base.anchorPlace(volumeID: volumeID) }

    private func outage() throws(KeyProviderError) {
        let n = calls.withLock { $0 += 1; return $0 }
        if n <= failures { throw .unavailable("down (\(n))") }
    }

    func auditAnchor(volumeID: [UInt8]) throws(KeyProviderError) -> [UInt8]? {
        try outage()
        return try base.auditAnchor(volumeID: volumeID)
    }

    func setAuditAnchor(_ anchor: [UInt8], seq: UInt64, volumeID: [UInt8]) throws(KeyProviderError) {
        try outage()
        try base.setAuditAnchor(anchor, seq: seq, volumeID: volumeID)
    }
}
