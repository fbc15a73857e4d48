import XCTest

/// Rules of the syscall layer that the compiler cannot check, checked on the sources
/// (docs/design-notes.md, "System calls"). CMKFuse is left out where it still has its own
/// copies (it moves onto CMKSystem separately); everything else must follow them.
final class SourceRulesTests: XCTestCase {
    private static let sources = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Sources")

    /// (file relative to Sources/, line number, line) of every code line (comments skipped)
    /// matching `pattern`, in modules other than `exempt`.
    private func lines(matching pattern: String, exempt: [String]) throws -> [String] {
        let regex = try NSRegularExpression(pattern: pattern)
        var found: [String] = []
        let files = FileManager.default.enumerator(atPath: Self.sources.path)?.compactMap { $0 as? String } ?? []
        XCTAssertGreaterThan(files.count, 50, "the sources were found")
        for file in files where file.hasSuffix(".swift") && !exempt.contains(where: { file.hasPrefix($0) }) {
            let text = try String(contentsOf: Self.sources.appendingPathComponent(file), encoding: .utf8)
            for (n, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
                let code = line.trimmingCharacters(in: .whitespaces)
                if code.hasPrefix("//") { continue }
                let range = NSRange(code.startIndex..., in: code)
                if regex.firstMatch(in: code, range: range) != nil { found.append("\(file):\(n + 1): \(code)") }
            }
        }
        return found
    }

    /// `d_name` used as a value copies 256 bytes, past a short record and possibly past
    /// glibc's buffer: only `DirectoryEntry(record:)` reads names, from their address.
    func testOnlyTheDirectoryReaderReadsDirentNames() throws {
        XCTAssertEqual(try lines(matching: #"\bd_name\b"#, exempt: ["CMKSystem/DirectoryEntries.swift", "CMKFuse/"]), [])
    }

    /// A temporary `FileDescriptor` is closed before the call on its `descriptor` runs
    /// (DescriptorTests pins it): no source may write `….open(…).descriptor` or the like.
    func testNoTemporaryLendsItsDescriptor() throws {
        XCTAssertEqual(try lines(matching: #"\)[?!]?\s*\.descriptor\b"#, exempt: []), [])
    }

    /// The one EINTR rule: only CMKSystem retries an interrupted call.
    func testOnlyCMKSystemRetriesEINTR() throws {
        XCTAssertEqual(try lines(matching: #"\bEINTR\b"#, exempt: ["CMKSystem/", "CFuse3/", "CLinux/", "CMKFuse/"]), [])
    }
}
