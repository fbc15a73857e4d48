import Foundation
import CMKSocketKMS

extension ProviderKind {
    /// The simulated customer KMS as its own process (`cmkfs-kms serve`), over a Unix socket.
    public static let socket = ProviderKind(
        name: "socket",
        initHelp: "--kms socket: a cmkfs-kms process at --kms-socket PATH; --key-id ID uses an existing key.",
        flags: [
            ProviderFlag("--kms-socket", valueName: "PATH", help: "socket: the cmkfs-kms socket path.",
                         target: .setting("kms_socket"), required: true, isPath: true),
            ProviderFlag("--key-id", valueName: "ID", help: "socket: use this existing master key instead of creating one.",
                         target: .keyID),
        ],
        // The KMS answers each connection on a thread of its own and mostly waits (on its
        // latency, its audit log's fdatasync): 32 requests in flight keep it busy.
        rotationParallelism: .fixed(32),
        build: { config, context throws(CMKError) in
            guard let socket = config.kmsSocket else {
                throw CMKError(.notAVolume, "\(context.volume) uses the socket KMS but records no kms_socket")
            }
            return SocketKMSProvider(socketPath: socket, timeoutMilliseconds: socketTimeoutMilliseconds)
        },
        place: { "the KMS at \($0.kmsSocket ?? "?")" },
        initDescription: { "the KMS at \($0.kmsSocket ?? "?")" },
        statusDetail: { $0.kmsSocket.map { " at \($0)" } ?? "" },
        hints: { config in
            ProviderHints(notFound: "list the KMS's keys with: cmkfs-kms key list --state DIR",
                          disabled: "the key owner must enable it: cmkfs-kms key enable \(config.keyID) --state DIR",
                          unavailable: "start the KMS: cmkfs-kms serve --socket \(config.kmsSocket ?? "PATH") --state DIR")
        }
    )

    /// The socket KMS client's connect and I/O timeout: `CMKFS_KMS_TIMEOUT_MS`, default 5000.
    static var socketTimeoutMilliseconds: Int {
        ProcessInfo.processInfo.environment["CMKFS_KMS_TIMEOUT_MS"].flatMap(Int.init).map { max(50, $0) } ?? 5000
    }
}
