import ArgumentParser
import CMKVolume

/// What `cmkfs init` was given besides its own options: the volume and the flags of the key
/// providers. The provider flags come from `ProviderRegistry`, so a new provider needs no
/// change here; ArgumentParser hands them over unparsed, in their order.
struct ProviderArguments {
    var volume: String
    /// The value of each provider flag given, by flag name ("--kms-socket"); the last one wins.
    var values: [String: String]

    /// Accepts `--flag VALUE` and `--flag=VALUE` for every provider flag, and one VOLUME, in any
    /// order; what ArgumentParser would refuse is refused with its words.
    static func parse(_ words: [String]) throws(ValidationError) -> ProviderArguments {
        let known = ProviderRegistry.flags.map(\.flag)
        var positionals: [String] = []
        var values: [String: String] = [:]
        var afterTerminator = false
        var i = 0
        while i < words.count {
            let word = words[i]
            i += 1
            if afterTerminator || !word.hasPrefix("-") || word == "-" {
                positionals.append(word)
                continue
            }
            if word == "--" {
                afterTerminator = true
                continue
            }
            let parts = word.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let name = String(parts[0])
            guard let flag = known.first(where: { $0.name == name }) else { throw ValidationError("Unknown option '\(name)'") }
            if parts.count == 2 {
                values[name] = String(parts[1])
            } else {
                guard i < words.count else { throw ValidationError("Missing value for '\(name) <\(flag.valueName)>'") }
                values[name] = words[i]
                i += 1
            }
        }
        guard let volume = positionals.first else { throw ValidationError("Missing expected argument '<volume>'") }
        guard positionals.count == 1 else { throw ValidationError("Unexpected argument '\(positionals[1])'") }
        return ProviderArguments(volume: volume, values: values)
    }

    /// The provider flags for `cmkfs init --help`, one per line.
    static var help: String {
        ProviderRegistry.flags.map { "\($0.flag.name) \($0.flag.valueName): \($0.flag.help)" }.joined(separator: "\n")
    }
}
