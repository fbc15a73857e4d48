import ArgumentParser
import Foundation
import CMKSystem

/// `cmkfs-kms audit show|export`: the KMS's own record of every request it answered
/// (docs/kms-protocol.md, "The KMS's audit log"), filtered.
struct AuditCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "audit", abstract: "Read the KMS's audit log: every request it answered, with who asked and why.",
        discussion: """
        Join it with cmkfs' own log on the request id: cmkfs audit show VOLUME --json gives kms_request.

        Example: cmkfs-kms audit show --kms-dir /var/lib/cmkfs-kms --since 1h
        """,
        subcommands: [Show.self, Export.self])

    /// What both subcommands take: where the log is and which records.
    struct Selection: ParsableArguments {
        @Option(name: .customLong("kms-dir"), help: "The keystore directory whose log to read (DIR/kms-audit.log).") var kmsDir: String?
        /// `--kms-dir`'s old name.
        @Option(name: .customLong("state"), help: .hidden) var legacyState: String?
        var state: String? { kmsDir ?? legacyState }
        @Option(name: .customLong("audit-log"), help: "The log file itself (as given to serve --audit-log).") var auditLog: String?
        @Option(name: .customLong("request"),
                help: "Only this request id; an id followed by . matches no more, a batch id also matches its requests (ID.N).")
        var request: String?
        @Option(help: "Only requests naming this volume id (hex).") var volume: String?
        @Option(help: "Only requests naming this file id (hex).") var file: String?
        @Option(help: "Only requests at or after this time: ISO-8601 (2026-12-06T05:00:00Z) or an age (90s, 15m, 2h, 7d).")
        var since: String?
        @Option(help: "Only requests before this time (same forms as --since).") var until: String?
        @Option(help: "Only this result: ok, denied or error.") var result: String?

        func validate() throws {
            guard kmsDir == nil || legacyState == nil else { throw ValidationError("give the keystore once: --kms-dir DIR (--state is its old name)") }
            guard (state == nil) != (auditLog == nil) else { throw ValidationError("give one of --kms-dir DIR or --audit-log FILE") }
            if let result, !["ok", "denied", "error"].contains(result) { throw ValidationError("--result is ok, denied or error") }
        }

        var path: String { auditLog ?? (state! + "/" + KMSPaths.auditLogName) }

        /// The selected records: each line as written, with its parsed fields.
        func records() -> [(line: Substring, fields: [String: Any])] {
            guard let data = FileManager.default.contents(atPath: path) else {
                do { try Descriptor.cwd.access(path, mode: F_OK) } catch {
                    fail("there is no KMS audit log at \(path)", hint: "serve writes it; give the --kms-dir or --audit-log serve used", code: 2)
                }
                fail("cannot read the KMS audit log \(path): \(String(cString: strerror(errno)))", code: 17)
            }
            let since = since.map { bound($0, "--since") }, until = until.map { bound($0, "--until") }
            let text = String(decoding: data, as: UTF8.self)
            return text.split(separator: "\n").compactMap { line in
                // A torn line (a crash mid-write) is not JSON: skipped, as cmkfs' verifier does.
                guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else { return nil }
                func s(_ key: String) -> String? { object[key] as? String }
                if let request, let id = s("request_id"), !(id == request || id.hasPrefix(request + ".")) { return nil }
                if request != nil, s("request_id") == nil { return nil }
                if let volume, s("volume")?.lowercased() != volume.lowercased() { return nil }
                if let file, s("file")?.lowercased() != file.lowercased() { return nil }
                if let result, s("result") != result { return nil }
                if let since, (s("time") ?? "") < since { return nil }
                if let until, (s("time") ?? "") >= until { return nil }
                return (line, object)
            }
        }

        private func bound(_ text: String, _ flag: String) -> String {
            let units: [Character: Double] = ["s": 1, "m": 60, "h": 3600, "d": 86400]
            if let unit = text.last, let scale = units[unit], let n = Double(text.dropLast()), n >= 0 {
                let date = Date(timeIntervalSinceNow: -n * scale)
                let f = ISO8601DateFormatter()
                f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
                return f.string(from: date).replacingOccurrences(of: "Z", with: "000Z")
            }
            guard text.count >= 10, text.first?.isNumber == true else {
                fail("\(flag) \(text) is neither an ISO-8601 time nor an age", hint: "e.g. \(flag) 2h or \(flag) 2026-12-06T05:00:00Z", code: 64)
            }
            return text
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show the selected requests, one line each (or the JSON lines with --json).",
            discussion: "Example: cmkfs-kms audit show --kms-dir /var/lib/cmkfs-kms --volume 9b1c --result denied")
        @OptionGroup var selection: Selection
        @Flag(help: "Print the records as logged: one JSON object a line.") var json = false

        func run() {
            for (line, f) in selection.records() {
                if json { print(line); continue }
                func s(_ key: String) -> String? { f[key].flatMap { $0 is NSNull ? nil : "\($0)" } }
                var parts = [s("time") ?? "?", s("request_id") ?? "?", s("kms_op") ?? "?", s("result") ?? "?"]
                if let key = s("key") { parts.append("key=\(key)" + (s("key_version").map { " v\($0)" } ?? "")) }
                if let v = s("volume") { parts.append("volume=\(v)") }
                if let file = s("file") { parts.append("file=\(file)") }
                if let op = s("operation") { parts.append("for \(op)") }
                if s("uid") != nil || s("pid") != nil {
                    parts.append("by uid=\(s("uid") ?? "?") pid=\(s("pid") ?? "?") (\(s("process") ?? "?"))")
                }
                if let host = s("host") { parts.append("on \(host)") }
                if let reason = s("reason") { parts.append("reason: \(reason)") }
                if s("status") != "ok", let status = s("status") { parts.append("status=\(status)") }
                if let error = s("error") { parts.append("error: \(error)") }
                print(parts.joined(separator: " "))
            }
        }
    }

    struct Export: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write the selected records as JSON lines (for a SIEM), exactly as logged.",
            discussion: "Example: cmkfs-kms audit export --kms-dir /var/lib/cmkfs-kms --since 7d --output /tmp/kms-week.jsonl")
        @OptionGroup var selection: Selection
        @Option(help: "Write to this file instead of standard output.") var output: String?

        func run() {
            let text = selection.records().map { $0.line + "\n" }.joined()
            if let output {
                guard FileManager.default.createFile(atPath: output, contents: Data(text.utf8), attributes: [.posixPermissions: 0o600]) else {
                    fail("cannot write \(output)", code: 1)
                }
            } else {
                FileHandle.standardOutput.write(Data(text.utf8))
            }
        }
    }
}

enum KMSPaths {
    /// The audit log's name inside the state directory, unless `serve --audit-log` names another.
    static let auditLogName = "kms-audit.log"
}
