import ArgumentParser

/// "Did you mean": a mistyped subcommand (`cmkfs mout`, `cmkfs key revok`) gets the usual
/// `error:` and a `hint:` naming the closest command, instead of a list of unexpected arguments.
enum CommandSuggestion {
    /// Checks the words that select a subcommand, from the top; fails with a suggestion at the
    /// first unknown one that is close to a known one. Anything else is left to the parser.
    static func check(_ arguments: [String], command: ParsableCommand.Type = CMKFSCommand.self, path: [String] = ["cmkfs"]) {
        let subcommands = command.configuration.subcommands
        guard let word = arguments.first, !subcommands.isEmpty, !word.hasPrefix("-") else { return }
        let names = subcommands.map { $0._commandName }
        if let match = subcommands.first(where: { $0._commandName == word }) {
            check(Array(arguments.dropFirst()), command: match, path: path + [word])
            return
        }
        guard word != "help", let best = names.min(by: { distance(word, $0) < distance(word, $1) }),
              distance(word, best) <= max(1, best.count / 3) else { return }
        let parent = path.joined(separator: " ")
        fail(.init(.usage, "unknown command '\(parent) \(word)'", hint: "did you mean '\(parent) \(best)'? (\(parent) --help lists them)"))
    }

    /// Levenshtein distance (names are short).
    static func distance(_ a: String, _ b: String) -> Int {
        let a = Array(a), b = Array(b)
        var row = Array(0...b.count)
        for i in 1...max(a.count, 1) where !a.isEmpty {
            var previous = row[0]
            row[0] = i
            for j in stride(from: 1, through: b.count, by: 1) {
                let current = row[j]
                row[j] = min(row[j] + 1, row[j - 1] + 1, previous + (a[i - 1] == b[j - 1] ? 0 : 1))
                previous = current
            }
        }
        return a.isEmpty ? b.count : row[b.count]
    }
}
