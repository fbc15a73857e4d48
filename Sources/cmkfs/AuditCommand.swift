import ArgumentParser
import Foundation
import CMKAudit
import CMKCrypto
import CMKVolume

/// `cmkfs audit verify|show|export`: the volume's tamper-evident log of key use
/// (docs/audit-format.md, docs/operator-guide.md).
struct AuditCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "audit",
        abstract: "Verify, browse and export the volume's audit log of key use.",
        discussion: "Example: cmkfs audit show /srv/secure-vol --since 2h --event open",
        subcommands: [Verify.self, Show.self, Export.self]
    )

    struct Verify: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check the MAC chain and the checkpoint; names the first bad record (exit 12).",
            discussion: """
            Needs the audit key, unwrapped by the volume's key provider (the master key must be enabled).

            Example: cmkfs audit verify /srv/secure-vol --json
            """
        )
        @Argument(help: "The volume directory.") var volume: String
        @Option(name: .customLong("segments"), parsing: .upToNextOption,
                help: "Verify these segment files (e.g. an archived set) instead of VOLUME/audit; may start mid-chain.")
        var segments: [String] = []
        @Option(name: .customLong("kms-dir"), help: "Use this embedded KMS keystore instead of the one the volume records.")
        var kmsDir: String?
        @Option(name: [.customLong("pin-file"), .customLong("vault-token-file")], help: "PKCS#11 volumes: a file holding the user PIN, Vault volumes: the token (else $CMKFS_PKCS11_PIN or $VAULT_TOKEN).")
        var pinFile: String?
        @Flag(help: "Print one JSON object (records, first_seq, last_seq, checkpoint_seq, notes) instead of text.")
        var json = false

        /// `cmkfs audit verify --json` on an intact log (docs/json.md); a broken one exits 12
        /// with the usual error line and prints nothing on stdout.
        struct Verified: Encodable {
            var format = 1
            var intact = true
            var records: Int
            var firstSeq, lastSeq, checkpointSeq: UInt64?
            var checkpointTime: String?
            var anchorSeq: UInt64?
            var anchorPlace: String?
            var notes: [String]
            enum CodingKeys: String, CodingKey {
                case format, intact, records, firstSeq = "first_seq", lastSeq = "last_seq", checkpointSeq = "checkpoint_seq"
                case checkpointTime = "checkpoint_time", anchorSeq = "anchor_seq", anchorPlace = "anchor_place", notes
            }
            func encode(to encoder: Encoder) throws {
                var c = encoder.container(keyedBy: CodingKeys.self)
                try c.encode(format, forKey: .format); try c.encode(intact, forKey: .intact); try c.encode(records, forKey: .records)
                try c.encode(firstSeq, forKey: .firstSeq); try c.encode(lastSeq, forKey: .lastSeq)
                try c.encode(checkpointSeq, forKey: .checkpointSeq); try c.encode(checkpointTime, forKey: .checkpointTime)
                try c.encode(anchorSeq, forKey: .anchorSeq); try c.encode(anchorPlace, forKey: .anchorPlace)
                try c.encode(notes, forKey: .notes)
            }
        }

        func run() {
            reporting { () throws(CMKError) in
                let pin = try PINSource.forVolume(volume, pinFile: pinFile, promptAtTerminal: false)
                let v = try Volume.open(at: volume, kmsDir: kmsDir, pin: pin, purpose: "audit")
                let key = try v.auditKey()
                // The anchor and the checkpoint first: records written after these reads cannot
                // look like a cut tail.
                var anchorNotes: [String] = []
                var anchor: AuditAnchorCheck?
                if segments.isEmpty {
                    do throws(CMKError) {
                        anchor = try v.auditAnchor()
                        if anchor == nil {
                            anchorNotes.append("not anchored: the \(v.config.provider.kind) key provider keeps no anchor; "
                                               + "a log cut or rolled back together with meta.db would not be detected")
                        } else if anchor?.bytes == nil {
                            anchorNotes.append("not anchored yet: \(anchor!.place) holds no anchor for this volume (a volume "
                                               + "made before anchors, or the anchor was deleted); the next mount makes one")
                        }
                    } catch {
                        anchorNotes.append("the anchor could not be read, so it was not checked: \(error.message)")
                    }
                }
                let checkpoint = segments.isEmpty ? try v.auditCheckpoint() : nil
                let paths = segments.isEmpty
                    ? AuditSegments.list(v.auditPath).map(\.path)
                    : segments.map(absolute).compactMap(AuditSegments.parse)
                        .sorted { ($0.firstSeq, $0.attempt) < ($1.firstSeq, $1.attempt) }.map(\.path)
                guard segments.isEmpty || paths.count == segments.count else {
                    throw CMKError(.io, "a --segments file is not named audit-<seq>.log", hint: "keep the names the log gave its segments")
                }
                let report: AuditReport
                do throws(AuditError) { report = try AuditVerifier.verify(segments: paths, key: key, checkpoint: checkpoint,
                                                       anchor: anchor?.bytes == nil ? nil : anchor,
                                                       allowMissingHead: !segments.isEmpty) } catch { throw CMKError(error) }
                let notes = report.notes + anchorNotes
                if !json { for note in notes { print("note: \(note)") } }
                if let problem = report.problem {
                    throw CMKError(.auditNotIntact, "the audit log of \(v.path) is not intact: \(problem)",
                                   hint: "keep a copy of VOLUME/audit and meta.db as evidence; records before the named one verified")
                }
                if json {
                    printJSON(Verified(records: report.records, firstSeq: report.firstSeq.map { UInt64($0) },
                                       lastSeq: (report.lastSeq ?? report.firstSeq).map { UInt64($0) },
                                       checkpointSeq: report.checkpoint.map { UInt64($0.count) },
                                       checkpointTime: report.checkpoint.map { "\($0.time)" },
                                       anchorSeq: report.anchor?.count, anchorPlace: report.anchor == nil ? nil : anchor?.place, notes: notes))
                    return
                }
                let range = report.firstSeq.map { " (seq \($0)…\(report.lastSeq ?? $0))" } ?? ""
                let cp = report.checkpoint.map { ", checkpoint at seq \($0.count) of \($0.time) matches" } ?? ""
                let anchored = report.anchor.map { a in ", anchor in \(anchor?.place ?? "?") at seq \(a.count) of \(a.time) matches" } ?? ", not anchored"
                print("\(report.records) records\(range), chain intact\(cp)\(anchored)")
            }
        }
    }

    struct Filters: ParsableArguments {
        @Option(help: "Records at or after T (ISO-8601 UTC like 2026-11-24T03:00:00Z, or an age like 30m, 2h, 1d).")
        var since: String?
        @Option(help: "Records before T (same forms as --since).")
        var until: String?
        @Option(help: "Records of this file: its path inside the mount (also under later names, by file id).")
        var file: String?
        @Option(help: "Records of this event (open, create, truncate, mount, revoke, …).")
        var event: String?
        @Option(name: .customLong("after-seq"), help: "Records whose seq is greater than N: a cursor (the last seq a SIEM took).")
        var afterSeq: UInt64?
        @Flag(help: "Keep printing records as they are appended, until interrupted (Ctrl-C, SIGTERM).")
        var follow = false
        @Option(name: .customLong("kms-dir"), help: "Use this embedded KMS keystore instead of the one the volume records.")
        var kmsDir: String?
        @Option(name: [.customLong("pin-file"), .customLong("vault-token-file")], help: "PKCS#11 volumes: a file holding the user PIN, Vault volumes: the token (else $CMKFS_PKCS11_PIN or $VAULT_TOKEN).")
        var pinFile: String?

        /// How often `--follow` looks for new records.
        static let followInterval = 0.2

        /// The path key and the chain check, through the provider (paths are sealed and records
        /// MACed under the audit key); nil with a note on stderr when it cannot be had: paths
        /// then show as `(sealed)` and records are not checked.
        func auditKey(_ volume: String) throws(CMKError) -> (seal: AuditPathSeal, check: AuditStreamCheck)? {
            do throws(CMKError) {
                let pin = try PINSource.forVolume(volume, pinFile: pinFile, promptAtTerminal: false)
                let key = try Volume.open(at: volume, kmsDir: kmsDir, pin: pin, purpose: "audit").auditKey()
                do { return (try AuditPathSeal(auditKey: key), try AuditStreamCheck(key: key)) } catch {
                    throw CMKError(.internalError, "cannot derive the path key: \(error)")
                }
            } catch {
                guard file == nil else {
                    throw CMKError(error.code, "--file needs the audit key (paths are sealed under it): \(error.message)", hint: error.hint)
                }
                FileHandle.standardError.write(Data(("cmkfs: note: paths are sealed under the audit key, which cannot be had (\(error.message)); "
                                                     + "they show as (sealed), and the records are not checked against the chain\n").utf8))
                return nil
            }
        }

        /// The filters as given, checked before the log is read: a name no record can carry, a
        /// path that cannot be one inside the mount or an unreadable time is a usage error (exit
        /// 64), never an empty result.
        func checked() throws(CMKError) -> (since: String?, until: String?, file: String?) {
            let since = try since.map { (t) throws(CMKError) in try AuditTime.parse(t, flag: "--since") }
            let until = try until.map { (t) throws(CMKError) in try AuditTime.parse(t, flag: "--until") }
            if let since, let until, since >= until {
                throw CMKError(.usage, "--since \(self.since!) is not before --until \(self.until!)",
                               hint: "--since is the earliest record time, --until the time records must be before")
            }
            if let event, !AuditEvent.names.contains(event) {
                let close = AuditEvent.names.filter { $0.hasPrefix(event) || event.hasPrefix($0) }
                throw CMKError(.usage, "unknown audit event '\(event)'" + (close.isEmpty ? "" : " (did you mean \(close.joined(separator: " or "))?)"),
                               hint: "valid events: " + AuditEvent.names.joined(separator: ", "))
            }
            guard let file else { return (since, until, nil) }
            let parts = file.split(separator: "/", omittingEmptySubsequences: true)
            guard !parts.isEmpty, !parts.contains("."), !parts.contains(".."), !file.contains("\0") else {
                throw CMKError(.usage, "--file '\(file)' is not a file's path inside the mount",
                               hint: "give the path as the mount shows it, from its root, like --file /reports/q3.pdf")
            }
            return (since, until, "/" + parts.joined(separator: "/"))
        }

        /// Streams the selected records to `emit` in log order, a chunk of the log at a time
        /// (memory does not grow with the log); with `--follow`, then the records appended, until
        /// the process is stopped. `--file` reads the log twice: first for the file ids its path
        /// had, so records under earlier and later names are all selected. Every record read
        /// (selected or not) is checked against the chain first: at the first that does not
        /// continue it, what was printed is flushed and the command fails (exit 12).
        func stream(_ volume: String, _ emit: (AuditLine, inout RecordOutput) throws(CMKError) -> Void) throws(CMKError) {
            let (since, until, file) = try checked()
            let dir = absolute(volume) + "/audit"
            guard FileManager.default.fileExists(atPath: dir) else {
                if CMKError.isDenied(dir) { throw .permissionDenied(dir) }
                throw CMKError(.notAVolume, "\(absolute(volume)) has no audit log (no audit/ directory)",
                               hint: "name a volume directory made by cmkfs init")
            }
            // There but unreadable is not an empty log.
            if CMKError.isDenied(dir) { throw .permissionDenied(dir) }
            let key = try auditKey(volume)
            let seal = key?.seal
            var ids = Set<String>()
            if let file {
                var first = AuditTail(directory: dir)
                do throws(AuditError) {
                    try first.read { raw in
                        // Only lines naming the path need their path opened.
                        guard let line = AuditLine(raw, seal: seal), line.path == file, let id = line.fileID else { return }
                        ids.insert(id)
                    }
                } catch { throw CMKError(error) }
            }
            let sinceBytes = since.map { Array($0.utf8) }, untilBytes = until.map { Array($0.utf8) }
            let eventToken = event.map { e -> [UInt8] in var t = [UInt8](); AuditLine.quote(e, into: &t); return t }
            var out = RecordOutput()
            var failure: CMKError?
            var tail = AuditTail(directory: dir)
            tail.check = key?.check
            var noted = false
            func pass() throws(CMKError) {
                defer {
                    if !noted, let start = tail.check?.startedAt {
                        noted = true
                        FileHandle.standardError.write(Data(("cmkfs: note: the log starts at seq \(start), not 1: the records before it "
                                                             + "are missing or archived (audit verify reports it); the chain is checked from there\n").utf8))
                    }
                }
                do throws(AuditError) {
                    try tail.read { raw in
                        guard failure == nil, let line = AuditLine(raw, seal: seal) else { return }
                        if let afterSeq, (line.seq ?? 0) <= afterSeq { return }
                        if let eventToken, !(line.token("event")?.elementsEqual(eventToken) ?? false) { return }
                        if sinceBytes != nil || untilBytes != nil {
                            let time = line.token("time").map { Array($0.dropFirst().dropLast()) } ?? []
                            if let sinceBytes, time.lexicographicallyPrecedes(sinceBytes) { return }
                            if let untilBytes, !time.lexicographicallyPrecedes(untilBytes) { return }
                        }
                        if let file {
                            if line.path == file, let id = line.fileID { ids.insert(id) }
                            guard line.path == file || (line.fileID.map(ids.contains) ?? false) else { return }
                        }
                        do throws(CMKError) { try emit(line, &out) } catch { failure = error }
                    }
                } catch {
                    guard error.kind == .malformed, failure == nil else { throw CMKError(error) }
                    // What came before the bad record was checked: print it, then stop.
                    try out.flush()
                    throw CMKError(.auditNotIntact, "the audit log of \(absolute(volume)) is not intact at \(error.message); "
                                   + "the records before it were printed, none after", hint: error.hint)
                }
                if let failure { throw failure }
                try out.flush()
            }
            try pass()
            guard follow else { return }
            while true {
                Thread.sleep(forTimeInterval: Self.followInterval)
                try pass()
            }
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List records, one a line, each checked against the chain as it is read (exit 12 at the first that is not).",
            discussion: "Example: cmkfs audit show /srv/secure-vol --since 2h --file /reports/q3.pdf")
        @Argument(help: "The volume directory.") var volume: String
        @OptionGroup var filters: Filters
        @Flag(help: "Print each record as its JSON line.") var json = false

        func run() {
            reporting { () throws(CMKError) in
                try filters.stream(volume) { (line, out) throws(CMKError) in
                    if json { try out.line(line.opened) } else { try out.line(line.summary.utf8) }
                }
            }
        }
    }

    struct Export: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print records for a SIEM: one JSON object a line, exactly as logged (MACs included).",
            discussion: "Example: cmkfs audit export /srv/secure-vol --since 1d --format jsonl > events.jsonl")
        @Argument(help: "The volume directory.") var volume: String
        @OptionGroup var filters: Filters
        @Option(help: "Output format: jsonl.") var format: String = "jsonl"
        @Flag(help: "Print the lines exactly as logged (paths sealed), e.g. to check their MACs elsewhere.") var sealed = false

        func run() {
            reporting { () throws(CMKError) in
                guard format == "jsonl" else {
                    throw CMKError(.usage, "unknown export format '\(format)'", hint: "use --format jsonl")
                }
                try filters.stream(volume) { (line, out) throws(CMKError) in try out.line(sealed ? line.raw : line.opened) }
            }
        }
    }
}

/// `--since`/`--until`: ISO-8601 or an age, as the record time format (comparable as text).
enum AuditTime {
    /// The forms `--since`/`--until` accept, for the error of one that is none of them.
    static let forms = "an ISO-8601 time like 2026-11-24T03:00:00Z (fractions and offsets like +01:00 allowed), "
        + "a UTC date like 2026-11-24, or an age: a number with s, m, h or d, like 90s, 30m, 2h, 1d"

    static func parse(_ text: String, flag: String = "--since") throws(CMKError) -> String {
        let units: [Character: Double] = ["s": 1, "m": 60, "h": 3600, "d": 86400]
        if let unit = text.last, let scale = units[unit], let n = Double(text.dropLast()),
           text.first?.isNumber == true, n.isFinite, n * scale < 1e11 {
            return format(Date().addingTimeInterval(-n * scale))
        }
        let iso = ISO8601DateFormatter()
        iso.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        if let d = iso.date(from: text) { return format(d) }
        iso.formatOptions = [.withInternetDateTime]
        if let d = iso.date(from: text) { return format(d) }
        iso.formatOptions = [.withFullDate]
        if text.count == 10, let d = iso.date(from: text) { return format(d) }
        throw CMKError(.usage, "cannot read the time '\(text)' given to \(flag)", hint: "accepted: " + forms)
    }

    static func format(_ date: Date) -> String {
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: "UTC")
        f.dateFormat = "yyyy-MM-dd'T'HH:mm:ss.SSSSSS'Z'"
        return f.string(from: date)
    }
}
