import Foundation
import XCTest

/// How the mount daemon keeps its memory (issue 20: daemon RSS at 100,000 files no higher than
/// before). Resident sizes are measured, not asserted here; what is pinned is the setting.
final class DaemonMemoryTests: IntegrationTestCase {
    /// The daemon limits glibc's malloc to two arenas before its threads start. With glibc's
    /// default every thread that allocates while the others are busy gets an arena of its own
    /// (up to eight per core), each a 64 MiB-aligned heap mapped apart from the main one, and the
    /// inodes of many files were spread over a dozen such heaps with their free space resident.
    /// Counted after many FUSE requests from parallel processes, which make libfuse start worker
    /// threads: at most one heap besides the main arena.
    func testTheDaemonAllocatesFromTwoMallocArenasAtMost() throws {
        let pid = try XCTUnwrap(fx.lockPID())
        sh("""
        for j in $(seq 1 8); do
          (mkdir \(mnt)/d$j && for i in $(seq 1 150); do echo $i > \(mnt)/d$j/$i; done; ls -l \(mnt)/d$j >/dev/null; cat \(mnt)/d$j/* >/dev/null) &
        done
        wait
        """)
        XCTAssertEqual(sh("ls \(mnt)/d8 | wc -l"), "150\n")
        let threads = try XCTUnwrap(try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
            .split(separator: "\n").first { $0.hasPrefix("Threads:") })
        let heaps = try Self.threadArenaHeaps(of: pid)
        XCTAssertLessThanOrEqual(heaps.count, 1, "the daemon (\(threads)) has \(heaps.count) malloc heaps besides the main arena: \(heaps)")
    }

    /// The heaps of glibc's non-main arenas in `pid`'s address space: anonymous mappings that
    /// start on a 64 MiB boundary (HEAP_MAX_SIZE on 64-bit) and, with the inaccessible rest
    /// reserved right after them, span exactly 64 MiB. Thread stacks and other mappings do not.
    static func threadArenaHeaps(of pid: pid_t) throws -> [String] {
        let heapSize: UInt64 = 64 << 20
        struct Mapping { let start: UInt64, end: UInt64, perms: Substring, anonymous: Bool, line: Substring }
        let maps = try String(contentsOfFile: "/proc/\(pid)/maps", encoding: .utf8)
        let mappings: [Mapping] = maps.split(separator: "\n").compactMap { line in
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count >= 5 else { return nil }
            let range = fields[0].split(separator: "-")
            guard range.count == 2, let start = UInt64(range[0], radix: 16), let end = UInt64(range[1], radix: 16) else { return nil }
            return Mapping(start: start, end: end, perms: fields[1], anonymous: fields.count == 5, line: line)
        }
        var heaps: [String] = []
        for (i, m) in mappings.enumerated() where m.anonymous && m.perms == "rw-p" && m.start % heapSize == 0 {
            var end = m.end
            if end - m.start < heapSize, i + 1 < mappings.count {
                let rest = mappings[i + 1]
                if rest.anonymous, rest.perms == "---p", rest.start == end { end = rest.end }
            }
            if end - m.start == heapSize { heaps.append(String(m.line)) }
        }
        return heaps
    }
}
