import CMKCrypto

/// The chain checked as records stream by (`audit show`/`export`): each record's MAC under the
/// audit key, its `seq` one more than the record before and its `prev` that record's MAC — the
/// checks `AuditVerifier` makes, one line at a time, with memory for one MAC. It does not
/// diagnose (was the bad record edited, inserted, reordered?): it stops, and `audit verify`
/// names what was done. Nor does it check the checkpoint or the anchor (a cut tail).
public struct AuditStreamCheck {
    let hmac: HMACSHA256.Keyed
    /// The last record's MAC (64 lower-case hex digits), empty before the first record.
    var prev: [UInt8] = []
    var expected: UInt64 = 1
    /// How many records were checked.
    public private(set) var records = 0
    /// The first record's seq when the log does not start at seq 1 (its first segments archived
    /// or deleted: `audit verify` reports that as missing-head); the chain is checked from there.
    public private(set) var startedAt: UInt64?

    public init(key: SecretBytes) throws(AuditError) {
        do { hmac = try HMACSHA256.Keyed(key: key) } catch { throw AuditError(.key, "cannot set up the audit MAC: \(error)") }
    }

    /// Checks the next record line (without its newline); nil when it continues the chain, else
    /// what is wrong with it, in words.
    public mutating func check(_ line: ArraySlice<UInt8>) -> String? {
        guard let (body, mac, seq, prevStart) = Self.parse(line) else {
            return "a line that is not a record in the documented format (a hand-made or damaged line)"
        }
        // On the stack and compared with the logged hex in place: no allocation per record.
        let hmac = self.hmac
        let matches = withUnsafeTemporaryAllocation(of: UInt8.self, capacity: HMACSHA256.size) { out -> Bool? in
            do { try body.withUnsafeBytes { b in try hmac.mac(b, into: UnsafeMutableRawBufferPointer(out)) } } catch { return nil }
            return Self.equal(out, hex: mac)
        }
        guard let matches else { return "record seq \(seq): its MAC could not be computed" }
        guard matches else {
            return "record seq \(seq) does not match its MAC under the audit key (edited, inserted or forged)"
        }
        let logged = body[prevStart..<(prevStart + 64)]
        if prev.isEmpty {
            if seq != 1 || !logged.elementsEqual(AuditRecord.genesis.utf8) { startedAt = seq }
        } else if seq != expected || !logged.elementsEqual(prev) {
            return seq == expected
                ? "record seq \(seq) does not chain from the record before it (records replaced or reordered)"
                : "record seq \(seq) follows seq \(expected - 1) (records deleted, reordered or duplicated)"
        }
        prev.removeAll(keepingCapacity: true)
        prev += mac
        expected = seq &+ 1
        records += 1
        return nil
    }

    /// The body, the MAC's hex, the seq and where `prev`'s hex starts in the body; nil for a
    /// line not shaped like a record (AuditRecord.split and chainFields, without Strings).
    static func parse(_ line: ArraySlice<UInt8>) -> (ArraySlice<UInt8>, ArraySlice<UInt8>, UInt64, Int)? {
        guard line.count > AuditRecord.macSuffixLength, line.first == UInt8(ascii: "{"), line.last == UInt8(ascii: "}"),
              line[line.endIndex - 2] == UInt8(ascii: "\"") else { return nil }
        let start = line.endIndex - AuditRecord.macSuffixLength
        guard line[start..<(start + AuditRecord.macPrefix.count)].elementsEqual(AuditRecord.macPrefix) else { return nil }
        let mac = line[(start + AuditRecord.macPrefix.count)..<(line.endIndex - 2)]
        guard mac.allSatisfy(AuditRecord.isLowerHex) else { return nil }
        let body = line[line.startIndex..<start]
        guard body.starts(with: headV2) || body.starts(with: headV1) else { return nil }
        var i = body.startIndex + headV2.count
        var seq: UInt64 = 0
        var digits = 0
        while i < body.endIndex, let d = AuditRecord.digit(body[i]) { seq = seq &* 10 &+ UInt64(d); i += 1; digits += 1 }
        guard digits > 0, digits < 20, body.count >= prevTail.count + 65 + headV2.count, body.last == UInt8(ascii: "\"") else { return nil }
        let prevStart = body.endIndex - 65
        guard body[(prevStart - prevTail.count)..<prevStart].elementsEqual(prevTail),
              body[prevStart..<(body.endIndex - 1)].allSatisfy(AuditRecord.isLowerHex) else { return nil }
        return (body, mac, seq, prevStart)
    }

    static let headV2 = Array(#"{"v":2,"seq":"#.utf8)
    static let headV1 = Array(#"{"v":1,"seq":"#.utf8)
    static let prevTail = Array(#","prev":""#.utf8)

    /// Whether `bytes` are the lower-case hex `hex` (already checked to be 64 hex digits),
    /// looking at every byte whatever differs.
    static func equal(_ bytes: UnsafeMutableBufferPointer<UInt8>, hex: ArraySlice<UInt8>) -> Bool {
        func nibble(_ c: UInt8) -> UInt8 { c <= 0x39 ? c &- 0x30 : c &- 0x61 &+ 10 }
        guard hex.count == bytes.count * 2 else { return false }
        var difference: UInt8 = 0
        var i = hex.startIndex
        for b in bytes {
            difference |= b ^ (nibble(hex[i]) << 4 | nibble(hex[i + 1]))
            i += 2
        }
        return difference == 0
    }
}
