/// Reads the fields of a record line in place (docs/audit-format.md, "Byte level"): a scanner
/// for the flat objects the writer makes — no JSON object per record — for `audit show`/`export`
/// and the copies of records sent elsewhere (`AuditCopy`).
public enum AuditRecordScan {
    /// The fields of a flat object whose values are strings, numbers, `true`/`false` or `null`.
    public static func fields(_ line: ArraySlice<UInt8>) -> [(key: ArraySlice<UInt8>, value: ArraySlice<UInt8>)]? {
        var out: [(key: ArraySlice<UInt8>, value: ArraySlice<UInt8>)] = []
        out.reserveCapacity(24)
        var i = line.startIndex
        guard i < line.endIndex, line[i] == UInt8(ascii: "{"), line.last == UInt8(ascii: "}") else { return nil }
        i += 1
        /// The end of the string token starting at `j` (its opening quote), past its closing quote.
        func stringEnd(_ j: Int) -> Int? {
            var j = j + 1
            while j < line.endIndex {
                switch line[j] {
                case UInt8(ascii: "\\"): j += 2
                case UInt8(ascii: "\""): return j + 1
                default: j += 1
                }
            }
            return nil
        }
        while i < line.endIndex - 1 {
            guard line[i] == UInt8(ascii: "\""), let keyEnd = stringEnd(i), keyEnd < line.endIndex,
                  line[keyEnd] == UInt8(ascii: ":") else { return nil }
            let key = line[(i + 1)..<(keyEnd - 1)]
            let start = keyEnd + 1
            guard start < line.endIndex else { return nil }
            var end: Int
            if line[start] == UInt8(ascii: "\"") {
                guard let e = stringEnd(start) else { return nil }
                end = e
            } else {
                end = start
                while end < line.endIndex - 1, line[end] != UInt8(ascii: ",") {
                    let c = line[end]
                    guard c == UInt8(ascii: "-") || c == UInt8(ascii: ".") || c == UInt8(ascii: "+")
                            || (c >= 0x30 && c <= 0x39) || (c >= 0x61 && c <= 0x7A) || c == UInt8(ascii: "E") else { return nil }
                    end += 1
                }
                guard end > start else { return nil }
            }
            out.append((key, line[start..<end]))
            if end == line.endIndex - 1 { return out }
            guard line[end] == UInt8(ascii: ",") else { return nil }
            i = end + 1
        }
        return out
    }

    /// A string token decoded; nil for anything else (null, a number).
    public static func string(_ token: ArraySlice<UInt8>?) -> String? {
        guard let token, token.count >= 2, token.first == UInt8(ascii: "\"") else { return nil }
        let body = token.dropFirst().dropLast()
        guard body.contains(UInt8(ascii: "\\")) else { return String(decoding: body, as: UTF8.self) }
        var out = [UInt8]()
        var i = body.startIndex
        while i < body.endIndex {
            let c = body[i]
            guard c == UInt8(ascii: "\\"), i + 1 < body.endIndex else { out.append(c); i += 1; continue }
            let e = body[i + 1]
            i += 2
            switch e {
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "u"):
                guard i + 4 <= body.endIndex, let v = UInt32(String(decoding: body[i..<(i + 4)], as: UTF8.self), radix: 16) else { return nil }
                i += 4
                out += Array(String(Unicode.Scalar(v).map(Character.init) ?? "\u{FFFD}").utf8)
            default: out.append(e)
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

}
