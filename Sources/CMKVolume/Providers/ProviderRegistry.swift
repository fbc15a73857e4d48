import CMKCrypto
import CMKKeys

/// Every key provider kind this cmkfs knows. Adding a provider is one file defining its
/// `ProviderKind` and one line here (docs/design-notes.md, "Adding a provider").
public enum ProviderRegistry {
    /// In the order `cmkfs init --help` lists them; the first is the default of `init --kms`.
    public static let kinds: [ProviderKind] = [
        .embedded,
        .socket,
        .pkcs11,
        .awsKMS,
        .vault,
    ]

    /// The kind `init` uses without `--kms`.
    public static var defaultKind: ProviderKind { kinds[0] }

    /// The kind recorded as `name`, or nil when this cmkfs does not know it.
    public static func kind(named name: String) -> ProviderKind? {
        kinds.first { $0.name == name }
    }

    /// The provider `config` names, built through its kind. `create`: at `init`, the provider's
    /// store may be made; `secret`: the kind's run-time secret (a PKCS#11 PIN), never stored.
    public static func makeProvider(_ config: ProviderConfig, create: Bool, volume: String,
                                    secret: SecretBytes?) throws(CMKError) -> any KeyProvider {
        guard let kind = kind(named: config.kind) else {
            throw CMKError(.unsupportedFormat, "\(volume) uses key provider '\(config.kind)', which this cmkfs does not know",
                           hint: "upgrade cmkfs")
        }
        return try kind.build(config, ProviderBuildContext(create: create, volume: volume, secret: secret))
    }

    /// The names as a sentence lists them: "embedded, socket or pkcs11".
    public static var namesListed: String {
        let names = kinds.map(\.name)
        guard names.count > 1 else { return names.first ?? "" }
        return names.dropLast().joined(separator: ", ") + " or " + names.last!
    }

    /// Every flag of every kind, each once, with the kinds it belongs to (in registry order).
    public static var flags: [(flag: ProviderFlag, kinds: [String])] {
        var result: [(flag: ProviderFlag, kinds: [String])] = []
        for kind in kinds {
            for flag in kind.flags {
                if let i = result.firstIndex(where: { $0.flag.name == flag.name }) {
                    result[i].kinds.append(kind.name)
                } else {
                    result.append((flag, [kind.name]))
                }
            }
        }
        return result
    }
}
