import Foundation
import CMKKeys
import CMKVault

extension ProviderKind {
    /// A HashiCorp Vault or OpenBao transit key; the token is needed at every open.
    public static let vault = ProviderKind(
        name: "vault",
        initHelp: "--kms vault: a transit key of Vault or OpenBao at --vault-addr URL named --vault-key NAME (made with derived=true "
            + "when missing) [--vault-mount transit] [--vault-namespace NS] [--vault-ca-cert FILE] [--vault-kv-mount secret]; token from --vault-token-file FILE, "
            + "$VAULT_TOKEN or the terminal.",
        flags: [
            ProviderFlag("--vault-addr", valueName: "URL", help: "vault: the server, https://HOST:8200 (http only for a server on this host).",
                         target: .setting("vault_addr"), required: true,
                         check: { VaultSettings(address: $0).problem(keyName: "k") }),
            ProviderFlag("--vault-key", valueName: "NAME", help: "vault: the transit key (adopted if it exists: it must be derived; else created).",
                         target: .keyID, required: true,
                         check: { VaultSettings.isPathSafe($0, slashes: false) ? nil : "--vault-key: '\($0)' has characters other than A-Z a-z 0-9 . _ -" }),
            ProviderFlag("--vault-mount", valueName: "PATH", help: "vault: the transit engine's mount path (default transit).",
                         target: .setting("vault_mount"),
                         check: { VaultSettings.isPathSafe($0, slashes: true) ? nil : "--vault-mount: '\($0)' has characters other than A-Z a-z 0-9 . _ - /" }),
            ProviderFlag("--vault-namespace", valueName: "NS", help: "vault: the namespace (X-Vault-Namespace), Vault Enterprise or OpenBao.",
                         target: .setting("vault_namespace"),
                         check: { VaultSettings.isPathSafe($0, slashes: true) ? nil : "--vault-namespace: '\($0)' has characters other than A-Z a-z 0-9 . _ - /" }),
            ProviderFlag("--vault-kv-mount", valueName: "PATH", help: "vault: a KV version 2 mount (e.g. secret) to keep the audit anchor in, at PATH/data/cmkfs/audit-anchor/VOLUME-ID (else none).",
                         target: .setting("vault_kv_mount"),
                         check: { VaultSettings.isPathSafe($0, slashes: true) ? nil : "--vault-kv-mount: '\($0)' has characters other than A-Z a-z 0-9 . _ - /" }),
            ProviderFlag("--vault-ca-cert", valueName: "FILE", help: "vault: PEM CA certificates to verify the server with (else the system's).",
                         target: .setting("vault_ca_cert"), isPath: true,
                         check: { FileManager.default.isReadableFile(atPath: $0) ? nil : "--vault-ca-cert: cannot read \($0)" }),
            ProviderFlag("--vault-token-file", valueName: "FILE", help: "vault: a file holding the token (else $VAULT_TOKEN, else the terminal); never recorded.",
                         target: .secretFile),
        ],
        secret: ProviderSecret(name: "token", environmentVariable: "VAULT_TOKEN",
                               prompt: { "Vault token for \($0["vault_addr"] ?? "?"): " }),
        // Rotation goes through the transit rewrap batch endpoint (BatchRewrapping), which keeps
        // its own requests in flight; this is only the fallback's width.
        rotationParallelism: .fixed(8),
        build: { config, context throws(CMKError) in
            guard let address = config["vault_addr"] else {
                throw CMKError(.notAVolume, "\(context.volume) uses Vault but records no vault_addr")
            }
            guard let token = context.secret else {
                throw CMKError(.keyUnavailable, "a Vault token is needed for \(context.volume)",
                               hint: "give it with --vault-token-file FILE (or --pin-file FILE after init), or the VAULT_TOKEN environment variable")
            }
            do throws(KeyProviderError) {
                return try VaultTransitProvider(settings: vaultSettings(config, address: address), keyName: config.keyID, token: token)
            } catch {
                throw CMKError(.usage, "\(error)".replacingOccurrences(of: "key provider unavailable: ", with: ""))
            }
        },
        namedMasterKey: { provider, name throws(KeyProviderError) in
            // --vault-key names the transit key: adopted at its newest version (it must be
            // derived), or made, derived, when missing.
            guard let vault = provider as? VaultTransitProvider else { return nil }
            return try vault.createKey()
        },
        place: { "Vault at \($0["vault_addr"] ?? "?")" },
        initDescription: { config in
            "Vault transit key \(vaultKeyName(config)) at \(config["vault_addr"] ?? "?") (mount \(config["vault_mount"] ?? "transit")"
                + (config["vault_namespace"].map { ", namespace \($0)" } ?? "") + ")"
        },
        statusDetail: { config in " transit key \(vaultKeyName(config)) at \(config["vault_addr"] ?? "?")" },
        hints: { config in
            let mount = config["vault_mount"] ?? "transit", key = vaultKeyName(config)
            return ProviderHints(
                notFound: "the transit key \(key) is gone from \(mount)/ (deleted?): check with bao read \(mount)/keys/\(key)",
                disabled: "the volume's key version is below \(mount)/keys/\(key)'s min_decryption_version: "
                    + "cmkfs key enable (or bao write \(mount)/keys/\(key)/config min_decryption_version=N) brings it back",
                denied: "give a valid token with --vault-token-file FILE or VAULT_TOKEN (its owner can check it: bao token lookup TOKEN); "
                    + "a periodic token must be renewed (bao token renew); its policy must allow the paths in docs/operator-guide.md, \"On Vault or OpenBao\"",
                unavailable: "check that Vault at \(config["vault_addr"] ?? "?") is up and unsealed (bao status)")
        }
    )

    static func vaultKeyName(_ config: ProviderConfig) -> String { config.keyID.isEmpty ? "?" : config.keyID }

    /// The recorded settings; the request deadline is `CMKFS_KMS_TIMEOUT_MS` like the socket KMS's.
    static func vaultSettings(_ config: ProviderConfig, address: String) -> VaultSettings {
        VaultSettings(address: address, mount: config["vault_mount"] ?? "transit", namespace: config["vault_namespace"],
                      caFile: config["vault_ca_cert"], connectTimeoutMilliseconds: min(2_000, socketTimeoutMilliseconds),
                      timeoutMilliseconds: socketTimeoutMilliseconds, kvMount: config["vault_kv_mount"])
    }
}
