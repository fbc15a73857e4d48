import CMKCrypto
import CMKMetrics

/// A provider that counts and times every call of its base into `metrics` (the mount's
/// `cmkfs_provider_calls_total` and `cmkfs_provider_call_duration_seconds`). It adds two clock
/// reads and a few atomic adds to a call that is a KMS round trip at best.
public struct MeteredProvider: KeyProvider {
    public let base: any KeyProvider
    public let metrics: ProviderMetrics

    public init(_ base: any KeyProvider, metrics: ProviderMetrics) {
        self.base = base
        self.metrics = metrics
    }

    public var kind: String { base.kind }
    public var versionsAreSeparateKeys: Bool { base.versionsAreSeparateKeys }

    public func createKey() throws(KeyProviderError) -> KeyRef {
        try timed(.createKey) { () throws(KeyProviderError) in try base.createKey() }
    }

    public func createVersion(of keyID: String) throws(KeyProviderError) -> KeyRef {
        try timed(.createVersion) { () throws(KeyProviderError) in try base.createVersion(of: keyID) }
    }

    public func wrap(_ dek: SecretBytes, with key: KeyRef, context: WrapContext) throws(KeyProviderError) -> [UInt8] {
        try timed(.wrap) { () throws(KeyProviderError) in try base.wrap(dek, with: key, context: context) }
    }

    public func unwrap(_ edek: [UInt8], with key: KeyRef, context: WrapContext) throws(KeyProviderError) -> SecretBytes {
        try timed(.unwrap) { () throws(KeyProviderError) in try base.unwrap(edek, with: key, context: context) }
    }

    public func state(of key: KeyRef) throws(KeyProviderError) -> ProviderKeyState {
        try timed(.state) { () throws(KeyProviderError) in try base.state(of: key) }
    }

    public func setState(_ state: ProviderKeyState, of key: KeyRef) throws(KeyProviderError) {
        try timed(.setState) { () throws(KeyProviderError) in try base.setState(state, of: key) }
    }

    public func anchorPlace(volumeID: [UInt8]) -> String? { base.anchorPlace(volumeID: volumeID) }

    public func auditAnchor(volumeID: [UInt8]) throws(KeyProviderError) -> [UInt8]? {
        try timed(.auditAnchor) { () throws(KeyProviderError) in try base.auditAnchor(volumeID: volumeID) }
    }

    public func setAuditAnchor(_ anchor: [UInt8], seq: UInt64, volumeID: [UInt8]) throws(KeyProviderError) {
        try timed(.setAuditAnchor) { () throws(KeyProviderError) in try base.setAuditAnchor(anchor, seq: seq, volumeID: volumeID) }
    }

    private func timed<R>(_ op: ProviderOperation, _ call: () throws(KeyProviderError) -> R) throws(KeyProviderError) -> R {
        let start = Metrics.now()
        do {
            let result = try call()
            metrics.record(op, since: start, succeeded: true)
            return result
        } catch {
            metrics.record(op, since: start, succeeded: false)
            throw error
        }
    }
}
