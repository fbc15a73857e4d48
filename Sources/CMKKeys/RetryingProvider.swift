import Glibc
import CMKCrypto

/// How often, and how patiently, a call that failed because the provider was unavailable is
/// tried again.
public struct RetryPolicy: Sendable, Equatable {
    /// Tries in all (1: no retry).
    public var attempts: Int
    /// The wait before the first retry; doubled before each next one, up to `maxDelayMilliseconds`.
    public var initialDelayMilliseconds: Int
    public var maxDelayMilliseconds: Int

    public init(attempts: Int, initialDelayMilliseconds: Int, maxDelayMilliseconds: Int) {
        self.attempts = max(1, attempts)
        self.initialDelayMilliseconds = max(0, initialDelayMilliseconds)
        self.maxDelayMilliseconds = max(self.initialDelayMilliseconds, maxDelayMilliseconds)
    }

    /// An offline check's patience: 6 tries over about 1.5 s (50, 100, 200, 400, 800 ms).
    public static let offlineCheck = RetryPolicy(attempts: 6, initialDelayMilliseconds: 50, maxDelayMilliseconds: 800)
}

/// A provider that tries a call again, with exponential backoff, when its provider answers
/// `.unavailable` (unreachable, timed out, refusing, failed): an outage is not an answer about
/// the key, so a caller deciding whether data is bad must not act on one.
///
/// Only idempotent calls are retried (wrap, unwrap, state, setState, and reading or storing
/// the audit anchor, which the provider keeps by seq); createKey and createVersion are passed
/// through once, since a first try may have been carried out. Every other requirement is
/// forwarded: a wrapper that fell back on a protocol default (no anchor) would hide the
/// provider's audit anchor from the command that wrapped it.
/// Every other error (unwrap failed, key disabled, not found, corrupt) is returned at once.
public struct RetryingProvider: KeyProvider {
    public let base: any KeyProvider
    public let policy: RetryPolicy

    public init(_ base: any KeyProvider, policy: RetryPolicy) {
        self.base = base
        self.policy = policy
    }

    public var kind: String { base.kind }
    public var versionsAreSeparateKeys: Bool { base.versionsAreSeparateKeys }

    public func createKey() throws(KeyProviderError) -> KeyRef { try base.createKey() }

    public func createVersion(of keyID: String) throws(KeyProviderError) -> KeyRef { try base.createVersion(of: keyID) }

    public func wrap(_ dek: SecretBytes, with key: KeyRef, context: WrapContext) throws(KeyProviderError) -> [UInt8] {
        try retrying { () throws(KeyProviderError) in try base.wrap(dek, with: key, context: context) }
    }

    public func unwrap(_ edek: [UInt8], with key: KeyRef, context: WrapContext) throws(KeyProviderError) -> SecretBytes {
        try retrying { () throws(KeyProviderError) in try base.unwrap(edek, with: key, context: context) }
    }

    public func state(of key: KeyRef) throws(KeyProviderError) -> ProviderKeyState {
        try retrying { () throws(KeyProviderError) in try base.state(of: key) }
    }

    public func setState(_ state: ProviderKeyState, of key: KeyRef) throws(KeyProviderError) {
        try retrying { () throws(KeyProviderError) in try base.setState(state, of: key) }
    }

    public func anchorPlace(volumeID: [UInt8]) -> String? { base.anchorPlace(volumeID: volumeID) }

    public func auditAnchor(volumeID: [UInt8]) throws(KeyProviderError) -> [UInt8]? {
        try retrying { () throws(KeyProviderError) in try base.auditAnchor(volumeID: volumeID) }
    }

    public func setAuditAnchor(_ anchor: [UInt8], seq: UInt64, volumeID: [UInt8]) throws(KeyProviderError) {
        try retrying { () throws(KeyProviderError) in try base.setAuditAnchor(anchor, seq: seq, volumeID: volumeID) }
    }

    private func retrying<R>(_ call: () throws(KeyProviderError) -> R) throws(KeyProviderError) -> R {
        var delay = policy.initialDelayMilliseconds
        var attempt = 1
        while true {
            do { return try call() } catch {
                guard case .unavailable = error, attempt < policy.attempts else { throw error }
                usleep(UInt32(delay) * 1000)
                delay = min(delay * 2, policy.maxDelayMilliseconds)
                attempt += 1
            }
        }
    }
}
