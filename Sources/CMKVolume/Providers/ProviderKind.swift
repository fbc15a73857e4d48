import Foundation
import CMKCrypto
import CMKKeys

/// One kind of key provider, as the volume and the CLI see it: how it is built from the settings
/// a volume records, what secret it needs at run time, the flags `cmkfs init` takes for it, how
/// messages and `status` name it, and how hard a rotation may drive it. Every kind this cmkfs
/// knows is listed once in `ProviderRegistry.kinds` (docs/design-notes.md, "Adding a provider").
public struct ProviderKind: Sendable {
    /// The name recorded in `cmkfs.volume` and given to `init --kms` ("embedded", "socket", …).
    public let name: String
    /// One line for `cmkfs init --help`: how a volume is made with this kind.
    public let initHelp: String
    /// The flags `cmkfs init --kms NAME` takes; a flag of another kind is refused.
    public let flags: [ProviderFlag]
    /// The secret the provider needs each time it is opened (a PKCS#11 PIN), or nil.
    public let secret: ProviderSecret?
    /// How many EDEKs a rotation re-wraps at once through this provider.
    public let rotationParallelism: RotationParallelism
    /// Builds the provider from a volume's recorded settings.
    let build: @Sendable (ProviderConfig, ProviderBuildContext) throws(CMKError) -> any KeyProvider
    /// How `init` gets the master key named by the key-id flag when this kind does more than
    /// check that the key exists and is enabled (pkcs11 creates a label the token lacks); nil
    /// from the closure, or no closure: the generic check.
    let namedMasterKey: (@Sendable (any KeyProvider, String) throws(KeyProviderError) -> KeyRef?)?
    /// Refuses settings `init` must not use for the volume at the given path (nothing to refuse: nil).
    let refuseAtInit: (@Sendable (ProviderConfig, String) throws(CMKError) -> Void)?
    /// Where the master key is, as error messages name it ("the KMS at PATH").
    let place: @Sendable (ProviderConfig) -> String
    /// Where the master key is, as `init` reports it ("the embedded KMS at DIR").
    let initDescription: @Sendable (ProviderConfig) -> String
    /// What follows the kind on the `key provider:` line of `status` (" at PATH").
    let statusDetail: @Sendable (ProviderConfig) -> String
    /// What to do when the key is not found, disabled, or the provider unavailable.
    let hints: @Sendable (ProviderConfig) -> ProviderHints

    public init(name: String, initHelp: String, flags: [ProviderFlag], secret: ProviderSecret? = nil,
                rotationParallelism: RotationParallelism,
                build: @escaping @Sendable (ProviderConfig, ProviderBuildContext) throws(CMKError) -> any KeyProvider,
                namedMasterKey: (@Sendable (any KeyProvider, String) throws(KeyProviderError) -> KeyRef?)? = nil,
                refuseAtInit: (@Sendable (ProviderConfig, String) throws(CMKError) -> Void)? = nil,
                place: @escaping @Sendable (ProviderConfig) -> String,
                initDescription: @escaping @Sendable (ProviderConfig) -> String,
                statusDetail: @escaping @Sendable (ProviderConfig) -> String,
                hints: @escaping @Sendable (ProviderConfig) -> ProviderHints) {
        self.name = name
        self.initHelp = initHelp
        self.flags = flags
        self.secret = secret
        self.rotationParallelism = rotationParallelism
        self.build = build
        self.namedMasterKey = namedMasterKey
        self.refuseAtInit = refuseAtInit
        self.place = place
        self.initDescription = initDescription
        self.statusDetail = statusDetail
        self.hints = hints
    }

    /// Where the master key is, as `init` reports it.
    public func describe(_ config: ProviderConfig) -> String { initDescription(config) }
    /// What follows the kind on the `key provider:` line of `status`.
    public func describeForStatus(_ config: ProviderConfig) -> String { statusDetail(config) }

    /// The configuration `init` records for the flag values given (by flag name, e.g.
    /// `["--kms-socket": "/run/kms.sock"]`), with defaults filled in and paths made absolute.
    /// The secret file (`--pin-file`) is not recorded: it is returned apart.
    public func config(fromFlags given: [String: String]) -> (config: ProviderConfig, secretFile: String?) {
        // `problem(withFlags:)` has refused what does not expand.
        let values = (try? expanding(given)) ?? given
        var config = ProviderConfig(kind: name, keyID: "")
        var secretFile: String?
        for flag in flags {
            guard var value = values[flag.name] ?? flag.defaultValue?() else { continue }
            if flag.isPath { value = absolute(value) }
            switch flag.target {
            case .setting(let member): config[member] = value
            case .keyID: config.keyID = value
            case .secretFile: secretFile = value
            case .expands: break
            }
        }
        return (config, secretFile)
    }

    /// The flag values with each expanding flag (`--pkcs11-uri`) replaced by the flags it stands
    /// for. A flag given both ways must agree; the expansion's own refusal is thrown as it is.
    public func expanding(_ values: [String: String]) throws(CMKError) -> [String: String] {
        var out = values
        for flag in flags {
            guard case .expands(let expand) = flag.target, let value = values[flag.name] else { continue }
            out[flag.name] = nil
            for (name, implied) in try expand(value) {
                if let given = values[name], given != implied {
                    throw CMKError(.usage, "\(name) \(given) disagrees with \(flag.name), which says \(implied)",
                                   hint: "give it once, in \(flag.name) or as \(name)")
                }
                out[name] = implied
            }
        }
        return out
    }

    /// The first thing wrong with the flag values given for this kind, as the CLI says it: a
    /// required flag missing, or a value the flag's own check refuses. nil: all good.
    public func problem(withFlags given: [String: String]) -> String? {
        let values: [String: String]
        do { values = try expanding(given) } catch { return error.message }
        let missing = flags.filter { $0.required && values[$0.name] == nil }
        if !missing.isEmpty {
            return "--kms \(name) needs " + missing.map { "\($0.name) \($0.valueName)" }.joined(separator: " and ")
        }
        for flag in flags {
            if let value = values[flag.name], let problem = flag.check?(value) { return problem }
        }
        return nil
    }
}

/// A flag of `cmkfs init` that belongs to one provider kind.
public struct ProviderFlag: Sendable {
    /// What the flag's value becomes.
    public enum Target: Sendable {
        /// A setting recorded in `cmkfs.volume` under this member name.
        case setting(String)
        /// The master key's id (an existing key to use, or the name of a new one).
        case keyID
        /// A file holding the kind's run-time secret; read at `init`, never recorded.
        case secretFile
        /// Stands for other flags of the kind (by flag name), as `--pkcs11-uri` stands for the
        /// module, token, key label and PIN file: expanded before anything else looks at them.
        case expands(@Sendable (String) throws(CMKError) -> [String: String])
    }

    /// With the dashes: "--kms-socket".
    public let name: String
    /// How `--help` and messages show the value: "PATH".
    public let valueName: String
    public let help: String
    public let target: Target
    /// `init --kms KIND` is refused without it.
    public let required: Bool
    /// Made absolute against the current directory before it is recorded.
    public let isPath: Bool
    /// The value when the flag is not given (nil: no value).
    public let defaultValue: (@Sendable () -> String)?
    /// What is wrong with a value, as the CLI says it (nil: nothing).
    public let check: (@Sendable (String) -> String?)?

    public init(_ name: String, valueName: String, help: String, target: Target, required: Bool = false, isPath: Bool = false,
                defaultValue: (@Sendable () -> String)? = nil, check: (@Sendable (String) -> String?)? = nil) {
        self.name = name
        self.valueName = valueName
        self.help = help
        self.target = target
        self.required = required
        self.isPath = isPath
        self.defaultValue = defaultValue
        self.check = check
    }
}

/// A secret a provider needs each time it is opened, given by the operator and never recorded.
public struct ProviderSecret: Sendable {
    /// What messages call it ("PIN").
    public let name: String
    /// The environment variable the CLI takes it from when no file is named (and then unsets).
    public let environmentVariable: String
    /// The terminal prompt, for the volume's settings.
    public let prompt: @Sendable (ProviderConfig) -> String

    public init(name: String, environmentVariable: String, prompt: @escaping @Sendable (ProviderConfig) -> String) {
        self.name = name
        self.environmentVariable = environmentVariable
        self.prompt = prompt
    }
}

/// How many provider calls a rotation keeps in flight.
public enum RotationParallelism: Sendable, Equatable {
    /// One per processor: the provider computes in this process.
    case perProcessor
    /// A fixed number: the provider is another process, a network service or an HSM.
    case fixed(Int)

    /// The worker count on this machine.
    public var workers: Int {
        switch self {
        case .perProcessor: ProcessInfo.processInfo.activeProcessorCount
        case .fixed(let n): n
        }
    }
}

/// What the operator is told to do about a key that cannot be used.
public struct ProviderHints: Sendable {
    public var notFound: String
    public var disabled: String
    /// For a refused token or credentials (`.accessDenied`); the `disabled` hint if not given.
    public var denied: String
    public var unavailable: String?

    public init(notFound: String, disabled: String, denied: String? = nil, unavailable: String?) {
        self.notFound = notFound
        self.disabled = disabled
        self.denied = denied ?? disabled
        self.unavailable = unavailable
    }
}

/// What building a provider may need besides the recorded settings.
public struct ProviderBuildContext: Sendable {
    /// `init`: the provider's store may be created (the embedded keystore directory).
    public let create: Bool
    /// The volume's path, for messages.
    public let volume: String
    /// The run-time secret (`ProviderKind.secret`), if the operator gave one.
    public let secret: SecretBytes?
}
