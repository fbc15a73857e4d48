import XCTest

/// Rules of the syscall layer that the compiler cannot check, checked on the sources
/// (docs/design-notes.md, "System calls"). Every module must follow them.
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
        XCTAssertEqual(try lines(matching: #"\bd_name\b"#, exempt: ["CMKSystem/DirectoryEntries.swift"]), [])
    }

    /// A temporary `FileDescriptor` is closed before the call on its `descriptor` runs
    /// (DescriptorTests pins it): no source may write `….open(…).descriptor` or the like.
    func testNoTemporaryLendsItsDescriptor() throws {
        XCTAssertEqual(try lines(matching: #"\)[?!]?\s*\.descriptor\b"#, exempt: []), [])
    }

    /// The one EINTR rule: only CMKSystem retries an interrupted call.
    /// (FuseMount reads libfuse's loop's answer, -EINTR when a signal ended it: not a retry.)
    func testOnlyCMKSystemRetriesEINTR() throws {
        XCTAssertEqual(try lines(matching: #"\bEINTR\b"#, exempt: ["CMKSystem/", "CLinux/", "CMKFuse/FuseMount.swift"]), [])
    }

    /// The FUSE layer calls the system through CMKSystem: no Glibc file, directory, socket or
    /// descriptor call of its own, no Linux call from a C shim. The one exception is the FUSE
    /// channel's read/writev hooks (`KernelChannel`), which must hand libfuse its EINTR.
    func testCMKFuseCallsTheSystemThroughCMKSystem() throws {
        let calls = "close|dup|fstat|fstatat|openat|unlinkat|mkdirat|mknodat|linkat|symlinkat|readlinkat|fchmodat|fchmod|"
            + "fchownat|fchown|utimensat|fdatasync|ftruncate|fdopendir|closedir|rewinddir|readdir|fcntl|fstatvfs|"
            + "socket|connect|getrlimit|setrlimit|strerror"
        let pattern = #"(?<![.\w])(?<!func )(Glibc\.\w+|cmkfs_(open|renameat2|fallocate|name_to_handle|open_by_handle|set_append_only|reserve)\w*|("# + calls + #"))\("#
        let found = try lines(matching: pattern, exempt: []).filter { $0.hasPrefix("CMKFuse/") && !$0.hasPrefix("CMKFuse/KernelChannel.swift") }
        XCTAssertEqual(found, [])
    }

    /// CFuse3 is libfuse's alone, and CLinuxFS is gone: the C shims the FUSE layer imports
    /// declare no Linux call or constant of their own.
    func testCFuse3DeclaresOnlyLibfuse() throws {
        let shim = try String(contentsOf: Self.sources.appendingPathComponent("CFuse3/shim.h"), encoding: .utf8)
        for copy in ["renameat2", "fallocate", "name_to_handle_at", "open_by_handle_at", "O_PATH", "O_TMPFILE", "AT_EMPTY_PATH", "O_NOATIME"] {
            XCTAssertFalse(shim.contains(copy), "CFuse3/shim.h still declares \(copy)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: Self.sources.appendingPathComponent("CLinuxFS").path))
    }
}
