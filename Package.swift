// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "cmkfs",
    products: [
        .executable(name: "cmkfs", targets: ["cmkfs"]),
        .executable(name: "cmkfs-kms", targets: ["cmkfs-kms"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.0"),
    ],
    targets: [
        // Thin C shims: module maps plus static inline wrappers for what Swift cannot call.
        .systemLibrary(name: "CFuse3", pkgConfig: "fuse3",
                       providers: [.apt(["libfuse3-dev"])]),
        .systemLibrary(name: "COpenSSL", pkgConfig: "libcrypto",
                       providers: [.apt(["libssl-dev"])]),
        .systemLibrary(name: "CSQLite", pkgConfig: "sqlite3",
                       providers: [.apt(["libsqlite3-dev"])]),
        // Linux calls and constants Swift's Glibc module hides (variadic, or GNU extensions):
        // compiled with _GNU_SOURCE in a C file of their own. Only CMKSystem imports it.
        .target(name: "CLinux"),
        // FUSE over io_uring: the kernel's ABI for it and a ring through liburing, compiled with
        // _GNU_SOURCE like CLinux (liburing's header needs it). Only CMKSystem imports it.
        .target(name: "CURing", linkerSettings: [.linkedLibrary("uring")]),
        // The PKCS#11 interface (p11-kit's header); modules are loaded with dlopen at run time.
        .systemLibrary(name: "CPKCS11", pkgConfig: "p11-kit-1",
                       providers: [.apt(["libp11-kit-dev"])]),
        // libcurl, OpenSSL flavour, for the HTTP key providers (Vault Transit, AWS KMS).
        .systemLibrary(name: "CCurl", pkgConfig: "libcurl",
                       providers: [.apt(["libcurl4-openssl-dev"])]),

        // The system calls: descriptors that close themselves, typed errno, the *at calls, one
        // EINTR rule (docs/design-notes.md, "System calls").
        .target(name: "CMKSystem", dependencies: ["CLinux", "CURing"]),
        // Crypto primitives over OpenSSL EVP: secret buffers, AES-256-GCM, randomness.
        .target(name: "CMKCrypto", dependencies: ["COpenSSL", "CMKSystem"]),
        // The content format: header, block math, block sealing, holes.
        .target(name: "CMKFormat", dependencies: ["CMKCrypto", "CMKSystem"]),
        // The mount's counters and histograms (lock-free atomics) and Prometheus' text format.
        .target(name: "CMKMetrics", dependencies: ["CMKSystem"]),
        // Key providers (KEK side): the protocol and the embedded simulated KMS.
        .target(name: "CMKKeys", dependencies: ["CMKCrypto", "CMKMetrics", "CMKSystem"]),
        // The PKCS#11 HSM key provider: module loading, session pool, AES-GCM wrap inside the token.
        .target(name: "CMKPKCS11", dependencies: ["CPKCS11", "CMKCrypto", "CMKKeys", "CMKSystem"]),
        // A blocking, thread-safe HTTP client over libcurl with a pool of keep-alive handles.
        .target(name: "CMKHTTP", dependencies: ["CCurl", "CMKCrypto"]),
        // The AF_UNIX conversations (client, server, datagram notice) of the socket KMS, the control
        // channel and the mount daemon's sd_notify, over CMKSystem's socket calls.
        .target(name: "CMKUnixSocket", dependencies: ["CMKSystem"]),
        // The Vault / OpenBao Transit key provider over CMKHTTP (derived keys, batch rewrap).
        .target(name: "CMKVault", dependencies: ["COpenSSL", "CMKCrypto", "CMKHTTP", "CMKKeys"]),
        // The simulated KMS over a Unix socket: wire format, client provider, server.
        .target(name: "CMKSocketKMS", dependencies: ["CMKCrypto", "CMKKeys", "CMKSystem", "CMKUnixSocket"]),
        // The AWS KMS provider: Signature Version 4, the credential chain, the KMS JSON API.
        .target(name: "CMKAWSKMS", dependencies: ["COpenSSL", "CMKCrypto", "CMKHTTP", "CMKKeys"]),
        // The DEK cache: TTLs, capacity, leasing with background renewal, flushes.
        .target(name: "CMKKeyService", dependencies: ["CMKCrypto", "CMKKeys"]),
        // A live mount's control channel: the requests and answers (docs/control-protocol.md) and
        // the socket plumbing both ends use (the mount's server, the CLI's client).
        .target(name: "CMKControl", dependencies: ["CMKKeyService", "CMKSystem", "CMKUnixSocket"]),
        // The tamper-evident audit log: record format, MAC chain, segments, checkpoints, verifier.
        .target(name: "CMKAudit", dependencies: ["CMKCrypto", "CMKMetrics", "CMKSystem"]),
        // SQLite metadata: schema, migrations, xattr-style rows per file id.
        .target(name: "CMKMetadata", dependencies: ["CSQLite", "CMKSystem"]),
        // A volume: its config, its database, its provider, the per-file key service.
        .target(name: "CMKVolume", dependencies: ["CMKAudit", "CMKCrypto", "CMKFormat", "CMKKeys", "CMKMetadata", "CMKMetrics", "CMKPKCS11", "CMKSocketKMS", "CMKAWSKMS", "CMKHTTP", "CMKSystem", "CMKVault"]),
        // The FUSE frontend: POSIX operations over the backing tree and the content format.
        .target(name: "CMKFuse", dependencies: ["CFuse3", "CMKControl", "CMKAudit", "CMKCrypto", "CMKFormat", "CMKKeys", "CMKKeyService", "CMKMetadata", "CMKMetrics", "CMKSystem", "CMKVolume",
                                                .product(name: "Logging", package: "swift-log")]),
        .executableTarget(name: "cmkfs", dependencies: [
            "CMKAudit", "CMKControl", "CMKVolume", "CMKFuse", "CMKKeyService", "CMKKeys", "CMKCrypto", "CMKMetrics", "CMKSystem", "CMKUnixSocket",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ]),

        // The simulated customer KMS as its own process (`cmkfs-kms serve`, `cmkfs-kms key …`).
        .executableTarget(name: "cmkfs-kms", dependencies: [
            "CMKCrypto", "CMKKeys", "CMKPKCS11", "CMKSocketKMS", "CMKSystem",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),

        // Benchmark, run by hand (not by `swift test`): unwrap latency per provider.
        .executableTarget(name: "provider-latency", dependencies: ["CMKAWSKMS", "CMKCrypto", "CMKHTTP", "CMKKeys", "CMKPKCS11", "CMKSocketKMS", "CMKVault"],
                          path: "bench/provider-latency"),

        // Benchmark, run by hand: µs per pread/pwrite/openat through CMKSystem against the raw calls.
        .executableTarget(name: "syscall-overhead", dependencies: ["BenchSupport", "CMKSystem"], path: "bench/syscall-overhead"),

        // Benchmark, run by hand: µs per file name encrypted/decrypted and per DEK wrapped/unwrapped
        // by the embedded KMS.
        .executableTarget(name: "name-codec", dependencies: ["BenchSupport", "CMKCrypto", "CMKFormat", "CMKKeys"], path: "bench/name-codec"),

        // Benchmark, run by hand: µs per audit record of an open, split into its steps.
        .executableTarget(name: "audit-record", dependencies: ["BenchSupport", "CMKAudit", "CMKCrypto", "CMKVolume"], path: "bench/audit-record"),

        // Benchmark, run by hand: µs per key-cache miss and hit, and the longest miss of a full cache.
        .executableTarget(name: "key-cache", dependencies: ["BenchSupport", "CMKCrypto", "CMKKeyService", "CMKKeys"], path: "bench/key-cache"),

        // Benchmark, run by hand: µs per EDEK read from meta.db (the metadata half of a key-miss open).
        .executableTarget(name: "edek-read", dependencies: ["BenchSupport", "CMKMetadata"], path: "bench/edek-read"),

        // What the by-hand micro-benchmarks above share: options, clocks, printing.
        .target(name: "BenchSupport", path: "bench/BenchSupport"),

        // Fuzz targets: one function per parser of untrusted bytes, run by CMKFuzzTests and by
        // the libFuzzer driver below (docs/fuzzing.md).
        .target(name: "CMKFuzzTargets", dependencies: ["CMKAudit", "CMKControl", "CMKCrypto", "CMKFormat", "CMKKeyService", "CMKKeys",
                                                       "CMKMetadata", "CMKSocketKMS", "CMKSystem", "CMKUnixSocket", "CSQLite"]),

        .testTarget(name: "CMKSystemTests", dependencies: ["CMKSystem"]),
        .testTarget(name: "CMKCryptoTests", dependencies: ["CMKCrypto"]),
        .testTarget(name: "CMKFormatTests", dependencies: ["CMKFormat", "CMKCrypto"]),
        .testTarget(name: "CMKMetricsTests", dependencies: ["CMKMetrics"]),
        .testTarget(name: "CMKPKCS11Tests", dependencies: ["CMKPKCS11"]),
        .testTarget(name: "CMKKeysTests", dependencies: ["CMKKeys", "CMKCrypto"]),
        .testTarget(name: "CMKAWSKMSTests", dependencies: ["CMKAWSKMS", "CMKCrypto"]),
        .testTarget(name: "CMKKeyServiceTests", dependencies: ["CMKKeyService", "CMKKeys", "CMKCrypto"]),
        .testTarget(name: "CMKAuditTests", dependencies: ["CMKAudit", "CMKCrypto"]),
        .testTarget(name: "CMKMetadataTests", dependencies: ["CMKMetadata"]),
        .testTarget(name: "CMKHTTPTests", dependencies: ["CMKHTTP"]),
        .testTarget(name: "CMKFuzzTests", dependencies: ["CMKFuzzTargets"]),
        .testTarget(name: "CMKControlTests", dependencies: ["CMKControl", "CMKUnixSocket"]),
        .testTarget(name: "CMKFuseTests", dependencies: ["CMKFuse", "CMKAudit", "CMKCrypto", "CMKFormat", "CMKKeyService",
                                                        "CMKKeys", "CMKMetadata", "CMKSystem", "CMKVolume"]),
        .testTarget(name: "CMKIntegrationTests", dependencies: ["cmkfs", "cmkfs-kms", "CMKVolume", "CMKFormat", "CMKCrypto",
                                                             "CMKKeys", "CMKPKCS11", "CMKSocketKMS", "CMKAudit", "CMKControl", "CMKUnixSocket", "CMKAWSKMS", "CMKHTTP", "CMKVault"]),
    ],
    swiftLanguageModes: [.v6]
)

// The libFuzzer driver exists only when CMKFS_FUZZ is set (fuzz/run.sh sets it), so `swift build`
// and `swift test` never need libFuzzer or unsafe flags.
if Context.environment["CMKFS_FUZZ"] != nil {
    package.targets.append(.systemLibrary(name: "CLibFuzzer", path: "fuzz/CLibFuzzer"))
    package.targets.append(.executableTarget(name: "cmkfs-fuzz", dependencies: ["CLibFuzzer", "CMKFuzzTargets"], path: "fuzz/driver",
                                             swiftSettings: [.unsafeFlags(["-sanitize=fuzzer", "-parse-as-library"])],
                                             linkerSettings: [.unsafeFlags(["-sanitize=fuzzer"])]))
}
