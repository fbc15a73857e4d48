import CMKKeys

/// The constants of the socket KMS protocol, version 1 (docs/kms-protocol.md).
public enum KMSProtocol {
    public static let version: UInt8 = 1

    /// Request operations.
    public enum Op: UInt8, Sendable {
        case ping = 0
        case createKey = 1
        case createVersion = 2
        case wrap = 3
        case unwrap = 4
        case state = 5
        case setState = 6
        /// The audit anchor of a volume (docs/kms-protocol.md, "Audit anchors").
        case anchorGet = 7
        case anchorSet = 8
    }

    /// Response status bytes.
    public enum Status: UInt8, Sendable {
        case ok = 0
        case keyNotFound = 1
        case keyDisabled = 2
        case keyDestroyed = 3
        case unwrapFailed = 4
        case unavailable = 5
        case corrupt = 6
        /// Fault injection or an operator told the KMS to refuse everything.
        case refusing = 7
        case badRequest = 8
        /// SO_PEERCRED: the caller's uid is neither root nor the socket owner.
        case forbidden = 9
    }

    static func stateByte(_ s: ProviderKeyState) -> UInt8 {
        switch s { case .enabled: 0; case .disabled: 1; case .destroyed: 2 }
    }

    static func state(_ b: UInt8) -> ProviderKeyState? {
        switch b { case 0: .enabled; case 1: .disabled; case 2: .destroyed; default: nil }
    }
}
