import ArgumentParser
import CMKCrypto
import CMKFormat
import CMKVolume

struct InitCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "init",
        abstract: "Create a new volume with its master key in a key provider (embedded KMS, socket KMS or PKCS#11 HSM).",
        discussion: """
        VOLUME must be missing or an empty directory. The master key is kept in the key provider, \
        never in the volume, so copying the volume does not copy the key.
        \(ProviderRegistry.kinds.map { "  " + $0.initHelp }.joined(separator: "\n"))
        File and directory names and symlink targets are encrypted under a name key wrapped by the \
        master key; --plaintext-names (debugging only) leaves them in clear.

        Example: cmkfs init /srv/secure-vol --kms-dir /etc/cmkfs/kms
        """
    )

    /// The volume and the provider flags, parsed by `ProviderArguments` (their flags come
    /// from the provider registry, which ArgumentParser cannot know at compile time).
    @Argument(parsing: .allUnrecognized,
              help: ArgumentHelp("The directory to hold the ciphertext, metadata database and audit log, and the chosen provider's flags:",
                                 discussion: ProviderArguments.help, valueName: "volume"))
    var arguments: [String] = []

    @Flag(help: "Print one JSON object (volume, volume_id, key_id, key_version, provider, names) instead of text.")
    var json = false

    @Option(help: ArgumentHelp("The key provider: \(ProviderRegistry.namesListed)."))
    var kms: String = ProviderRegistry.defaultKind.name

    @Option(name: .customLong("block-size"), help: "Plaintext bytes per encrypted block (power of two, 512…1048576).")
    var blockSize: Int = BlockLayout.defaultBlockSize

    @Flag(name: .customLong("plaintext-names"),
          help: "DEBUGGING ONLY: keep file names, directory names and symlink targets in clear in the backing tree (volume format 1).")
    var plaintextNames = false

    func validate() throws {
        let given = try ProviderArguments.parse(arguments)
        guard blockSize >= 512, blockSize <= 1 << 20, blockSize.nonzeroBitCount == 1 else {
            throw ValidationError("--block-size must be a power of two from 512 to 1048576")
        }
        guard let kind = ProviderRegistry.kind(named: kms) else {
            throw ValidationError("--kms must be \(ProviderRegistry.namesListed)")
        }
        // A flag of a provider not chosen is a mistake, never ignored: `--kms-socket S` without
        // `--kms socket` used to make an embedded volume, the opposite of what was meant.
        let defaulted = kms == ProviderRegistry.defaultKind.name && !ProviderRegistry.defaultKind.flags.contains { given.values[$0.name] != nil }
        for (flag, owners) in ProviderRegistry.flags where given.values[flag.name] != nil && !owners.contains(kms) {
            let owner = owners.joined(separator: " or ")
            fail(CMKError(.usage, "\(flag.name) is a flag of the \(owner) provider, but the volume would use the \(kms) provider",
                          hint: defaulted ? "add --kms \(owners[0]) (the default is \(kms))" : "drop \(flag.name), or choose --kms \(owners[0])"))
        }
        if let problem = kind.problem(withFlags: given.values) { throw ValidationError(problem) }
    }

    func run() {
        reporting { () throws(CMKError) in
            guard let given = try? ProviderArguments.parse(arguments), let kind = ProviderRegistry.kind(named: kms) else {
                throw CMKError(.usage, "invalid arguments")  // validate() refused them already
            }
            let (config, secretFile) = kind.config(fromFlags: given.values)
            var secret: SecretBytes?
            if let wanted = kind.secret {
                secret = try PINSource.read(pinFile: secretFile, promptAtTerminal: true, secret: wanted, config: config)
            }
            let v = try Volume.initialize(at: given.volume, provider: config, pin: secret, blockSize: blockSize, plaintextNames: plaintextNames)
            if json {
                printJSON(Created(volume: v.path, volumeID: v.config.volumeID, keyID: v.activeKey.keyID, keyVersion: v.activeKey.version,
                                  provider: v.config.provider.kind, names: v.encryptsNames ? "encrypted" : "plaintext"))
                return
            }
            print("created volume \(v.path)")
            print("  volume id:  \(v.config.volumeID)")
            print("  master key: \(v.activeKey) in \(kind.describe(v.config.provider))")
            print("  names:      " + (v.encryptsNames ? "encrypted (AES-256-SIV)" : "IN CLEAR (--plaintext-names: for debugging only)"))
            print("mount it with: cmkfs mount \(v.path) MOUNTPOINT")
        }
    }

    /// `cmkfs init --json` (docs/json.md).
    struct Created: Encodable {
        var format = 1
        var volume, volumeID, keyID: String
        var keyVersion: Int
        var provider, names: String
        enum CodingKeys: String, CodingKey {
            case format, volume, volumeID = "volume_id", keyID = "key_id", keyVersion = "key_version", provider, names
        }
    }
}
