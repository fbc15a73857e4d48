import Foundation
import CMKCrypto

/// What is wrong with a log, by kind, for `cmkfs audit verify` and the tests.
public enum AuditProblemKind: String, Sendable {
    /// A record does not match its MAC: a field was changed.
    case edited
    /// A line that is not part of the chain sits between two records that chain to each other.
    case inserted
    /// Records are missing before this one: deleted.
    case deleted
    /// This record is out of order (two records swapped, or records moved).
    case reordered
    /// A second copy of an earlier record (replayed).
    case duplicate
    /// Every record from here on fails its MAC although they link to each other: the chain was
    /// recomputed by someone without the audit key.
    case rewritten
    /// A line that is not a record at all.
    case malformed
    /// The log ends before the last checkpoint: its tail was cut off, or the log was replaced
    /// with an older copy.
    case truncated
    /// The checkpoint names a different record at its seq: the log was replaced.
    case replaced
    /// The checkpoint itself was altered.
    case checkpoint
    /// The first segment does not start at seq 1 (earlier segments are missing).
    case missingHead = "missing-head"
    /// A writer found records missing when it opened the log and chained an `audit-gap` record.
    case gap
    /// The log ends before the anchor kept by the key provider, or holds another record at its
    /// seq: cut off or rolled back together with meta.db.
    case behindAnchor = "behind-anchor"
}

/// The first problem found, naming the record.
public struct AuditProblem: Sendable, CustomStringConvertible {
    public let kind: AuditProblemKind
    public let seq: UInt64?
    public let segment: String
    public let line: Int
    public let message: String

    public var description: String {
        let at = line > 0 ? "\((segment as NSString).lastPathComponent) line \(line)" : (segment as NSString).lastPathComponent
        return "\(kind.rawValue): " + (seq.map { "record seq \($0) (\(at))" } ?? at) + ": " + message
    }
}

/// The outcome of a verification.
public struct AuditReport: Sendable {
    public var records: Int = 0
    public var firstSeq: UInt64?
    public var lastSeq: UInt64?
    /// The first problem (verification stops there); nil when the chain is intact.
    public var problem: AuditProblem?
    /// Things that are not forgery: a torn last record, a set of segments starting mid-chain.
    public var notes: [String] = []
    public var checkpoint: AuditCheckpoint?
    /// The anchor the log was checked against, if the provider keeps one.
    public var anchor: AuditCheckpoint?

    public var intact: Bool { problem == nil }
}

/// The anchor `verify` compares the log with: its bytes (nil: the provider keeps none for this
/// volume yet) and where it is kept.
public struct AuditAnchorCheck: Sendable {
    public let bytes: [UInt8]?
    public let place: String
    public init(bytes: [UInt8]?, place: String) {
        self.bytes = bytes
        self.place = place
    }
}

/// Verifies a chain of segments under the audit key, then the checkpoint.
public enum AuditVerifier {
    struct Line {
        let segment: String
        let number: Int
        let bytes: ArraySlice<UInt8>
        var parsed: (body: ArraySlice<UInt8>, mac: String, seq: UInt64, prev: String)?
        var macOK = false
    }

    /// `segments` in chain order. `allowMissingHead`: the set may start mid-chain (archived
    /// segments not given); the first record is then trusted as the anchor, with a note.
    public static func verify(segments: [String], key: SecretBytes, checkpoint: [UInt8]?,
                              anchor: AuditAnchorCheck? = nil,
                              allowMissingHead: Bool = false) throws(AuditError) -> AuditReport {
        var report = AuditReport()
        var lines: [Line] = []
        for (index, path) in segments.enumerated() {
            guard let data = FileManager.default.contents(atPath: path) else {
                throw AuditError(.io, "cannot read the audit segment \(path)")
            }
            let bytes = [UInt8](data)
            var start = 0
            var number = 0
            while start < bytes.count {
                number += 1
                guard let end = bytes[start...].firstIndex(of: 0x0A) else {
                    let last = index == segments.count - 1 ? "the last record" : "the last record of this segment"
                    report.notes.append("torn tail: \((path as NSString).lastPathComponent) ends with \(bytes.count - start) bytes of an "
                                        + "unfinished record (line \(number)): \(last) was being written when the writer crashed "
                                        + "or the disk filled; it is not counted and is not evidence of tampering")
                    break
                }
                var line = Line(segment: path, number: number, bytes: bytes[start..<end])
                if let split = AuditRecord.split(line.bytes), let chain = AuditRecord.chainFields(split.body) {
                    line.parsed = (split.body, split.mac, chain.seq, chain.prev)
                    let expected = try mac(key, split.body)
                    line.macOK = HMACSHA256.equal(expected, bytesFromHex(split.mac) ?? [])
                }
                lines.append(line)
                start = end + 1
            }
        }
        var cp: AuditCheckpoint?
        if let checkpoint {
            do { cp = try AuditCheckpoint.decode(checkpoint, key: key) } catch {
                report.problem = AuditProblem(kind: .checkpoint, seq: nil, segment: "meta.db", line: 0, message: error.message)
                return report
            }
            report.checkpoint = cp
        }
        var anchored: AuditCheckpoint?
        if let anchor, let bytes = anchor.bytes {
            do { anchored = try AuditCheckpoint.decode(bytes, key: key) } catch {
                report.problem = AuditProblem(kind: .checkpoint, seq: nil, segment: anchor.place, line: 0,
                                              message: "the anchor does not verify under the audit key (altered, or another volume's)")
                return report
            }
            report.anchor = anchored
        }
        if let problem = walk(lines, &report, allowMissingHead: allowMissingHead) {
            report.problem = problem
            return report
        }
        // The checkpoint first (it is the fresher of the two); the anchor catches what a
        // checkpoint rolled back with the log no longer shows.
        if let cp, let problem = check(cp, lines, report) {
            report.problem = problem
            return report
        }
        if let anchored, let anchor {
            report.problem = check(anchored, lines, report, what: "the anchor in \(anchor.place)", kind: .behindAnchor)
        }
        return report
    }

    /// Follows the chain; returns the first problem.
    static func walk(_ lines: [Line], _ report: inout AuditReport, allowMissingHead: Bool) -> AuditProblem? {
        var prev: String? = nil
        var expected: UInt64 = 1
        for (i, line) in lines.enumerated() {
            guard let p = line.parsed else {
                return AuditProblem(kind: .malformed, seq: nil, segment: line.segment, line: line.number,
                                    message: "not a record in the documented format (a hand-made or damaged line)")
            }
            func problem(_ kind: AuditProblemKind, _ message: String) -> AuditProblem {
                AuditProblem(kind: kind, seq: p.seq, segment: line.segment, line: line.number, message: message)
            }
            guard line.macOK else { return diagnoseBadMAC(lines, i, chainHead: prev, problem) }
            if p.body.firstRange(of: gapMarker) != nil {
                let detail = (try? JSONSerialization.jsonObject(with: Data(line.bytes)) as? [String: Any])?["detail"] as? String
                return problem(.gap, "the writer that opened the log at this point found records missing: " + (detail ?? "(no detail)"))
            }
            if prev == nil {
                if p.seq != 1 || p.prev != AuditRecord.genesis {
                    guard allowMissingHead else {
                        // No writer makes seq 0, and "1…seq − 1" would underflow for it.
                        guard p.seq > 0 else { return problem(.missingHead, "the log starts at seq 0, which no writer makes") }
                        return problem(.missingHead, "the log starts at seq \(p.seq), not 1: records 1…\(p.seq - 1) are missing "
                                       + "(deleted, or archived segments not given)")
                    }
                    report.notes.append("the given segments start at seq \(p.seq); records before it were not checked "
                                        + "(archived segments); the chain is anchored on that record")
                }
                report.firstSeq = p.seq
            } else if p.prev != prev || p.seq != expected {
                if p.seq > expected {
                    if lines[(i + 1)...].contains(where: { $0.parsed?.seq == expected }) {
                        return problem(.reordered, "out of order: it comes before record seq \(expected) (records swapped or moved)")
                    }
                    let missing = p.seq - 1 == expected ? "record seq \(expected) is" : "records seq \(expected)…\(p.seq - 1) are"
                    return problem(.deleted, "\(missing) missing before it (deleted)")
                }
                if lines[..<i].contains(where: { $0.parsed?.mac == p.mac }) {
                    return problem(.duplicate, "a second copy of record seq \(p.seq) (replayed or duplicated)")
                }
                if p.seq < expected {
                    return problem(.reordered, "out of order: record seq \(p.seq) after seq \(expected - 1) (records swapped or moved)")
                }
                return problem(.reordered, "does not chain from the record before it (its prev names another record)")
            }
            prev = p.mac
            expected = p.seq + 1
            report.records += 1
            report.lastSeq = p.seq
        }
        return nil
    }

    /// A record whose MAC does not verify: edited, inserted, or the whole chain rewritten.
    static func diagnoseBadMAC(_ lines: [Line], _ i: Int, chainHead: String?,
                               _ problem: (AuditProblemKind, String) -> AuditProblem) -> AuditProblem {
        let rest = lines[i...]
        let allBad = rest.allSatisfy { !$0.macOK }
        let linked = zip(rest, rest.dropFirst()).allSatisfy { a, b in a.parsed != nil && b.parsed?.prev == a.parsed?.mac }
        if rest.count > 1 && allBad && linked {
            return problem(.rewritten, "its MAC and those of all \(rest.count - 1) records after it do not verify under the audit key, "
                           + "though each names the one before: the chain was recomputed by someone without the audit key")
        }
        if i + 1 < lines.count, lines[i + 1].macOK, let next = lines[i + 1].parsed, next.prev == (chainHead ?? AuditRecord.genesis) {
            return problem(.inserted, "not part of the chain: the records before and after it chain to each other (a record was inserted)")
        }
        return problem(.edited, "its content does not match its MAC under the audit key (a field was edited, or the line forged)")
    }

    /// `"event":"audit-gap"` as it appears in a body (quotes inside strings are escaped, so no
    /// field value can contain it).
    static let gapMarker = Array(#","event":"\#(AuditGap.event)","#.utf8)

    /// The log must reach the checkpoint (or anchor) and hold the checkpointed record at its seq.
    static func check(_ cp: AuditCheckpoint, _ lines: [Line], _ report: AuditReport,
                      what: String = "the checkpoint", kind: AuditProblemKind = .truncated) -> AuditProblem? {
        let last = report.lastSeq ?? 0
        let where_ = lines.last?.segment ?? "audit/"
        if cp.count > last {
            return AuditProblem(kind: kind, seq: last == 0 ? nil : last, segment: where_, line: lines.last?.number ?? 0,
                                message: "the log ends at seq \(last) but \(what) of \(cp.time) records \(cp.count) records: "
                                + "records \(last + 1)…\(cp.count) were cut off, or the log was replaced with an older copy")
        }
        if let line = lines.first(where: { $0.parsed?.seq == cp.count }), line.parsed?.mac != cp.head {
            return AuditProblem(kind: kind == .truncated ? .replaced : kind, seq: cp.count, segment: line.segment, line: line.number,
                                message: "is not the record \(what) of \(cp.time) names at this seq: the log was replaced")
        }
        return nil
    }

    static func mac(_ key: SecretBytes, _ body: ArraySlice<UInt8>) throws(AuditError) -> [UInt8] {
        do { return try HMACSHA256.mac(key: key, Array(body)) } catch { throw AuditError(.key, "cannot compute a MAC: \(error)") }
    }
}
