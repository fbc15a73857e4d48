import Foundation

/// The kernel's mount table as this process sees it (`/proc/self/mounts`).
enum MountTable {
    struct Entry {
        var source: String
        var mountpoint: String
        var type: String
    }

    static func entries() -> [Entry] {
        guard let text = try? String(contentsOfFile: "/proc/self/mounts", encoding: .utf8) else { return [] }
        return text.split(separator: "\n").compactMap { line in
            let f = line.split(separator: " ")
            guard f.count >= 3 else { return nil }
            return Entry(source: unescape(f[0]), mountpoint: unescape(f[1]), type: String(f[2]))
        }
    }

    static func entry(at mountpoint: String) -> Entry? {
        entries().last { $0.mountpoint == mountpoint }
    }

    /// The kernel writes space, tab, newline and backslash as octal escapes (`\040`).
    static func unescape(_ s: Substring) -> String {
        let b = Array(s.utf8)
        var out = [UInt8]()
        var i = 0
        while i < b.count {
            if b[i] == UInt8(ascii: "\\"), i + 3 < b.count,
               let v = UInt8(String(decoding: b[(i + 1)...(i + 3)], as: UTF8.self), radix: 8) {
                out.append(v)
                i += 4
            } else {
                out.append(b[i])
                i += 1
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}
