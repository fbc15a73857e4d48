import Foundation
import XCTest

/// What the mount does per FUSE_OPEN (issue 20: reading a tree is one open per file), counted
/// with strace on the mount's threads.
final class OpenCostTests: IntegrationTestCase {
    /// An open opens its backing file once, straight from the inode's file handle, read-write
    /// and O_NOATIME. It used to open an `O_PATH` descriptor by handle first (every request on
    /// a node does), reopen the file through `/proc/self/fd/N` and close the `O_PATH` one: three
    /// calls, one of them a path walk through /proc.
    func testAnOpenOpensItsBackingFileOnceByHandle() throws {
        sh("mkdir \(mnt)/o && for i in $(seq 1 20); do echo $i > \(mnt)/o/$i; done")
        // Every name looked up and every key in the cache: what is left is the opens' own work.
        XCTAssertEqual(sh("cat \(mnt)/o/* | wc -l"), "20\n")
        let calls = try syscallsTraced("open_by_handle_at,openat") {
            XCTAssertEqual(sh("for i in $(seq 1 20); do cat \(mnt)/o/$i; done | wc -l"), "20\n")
        }
        let viaProc = calls.filter { $0.contains("\"/proc/self/fd/") }
        let byHandle = calls.filter { $0.contains("open_by_handle_at(") && $0.contains("O_RDWR") && $0.contains("O_NOATIME") }
        XCTAssertEqual(viaProc.count, 0, "20 opens reopened their files through /proc \(viaProc.count) times: \(viaProc.prefix(3))")
        XCTAssertEqual(byHandle.count, 20, "20 opens opened their backing files by handle \(byHandle.count) times: \(calls.prefix(6))")
    }
}
