import Foundation
import Glibc
import XCTest
@testable import CMKFormat

final class BackingDirectoryTests: XCTestCase {
    /// The last record of a full getdents64 batch can end right where glibc's buffer, and the
    /// mapped heap, end; its entry must be read from its own bytes only (the mount's readdir
    /// crashed copying 256 bytes of `d_name` past such a record).
    func testRecordEndingAtAnUnmappedPageIsReadWithinItsBytes() throws {
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let base = try XCTUnwrap(mmap(nil, 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0))
        XCTAssertNotEqual(base, MAP_FAILED)
        defer { munmap(base, 2 * page) }
        XCTAssertEqual(mprotect(base + page, page, PROT_NONE), 0)

        // A record as getdents64 lays it out: header, name, NUL, padded to 8 bytes.
        let name = "f1"
        let nameOffset = MemoryLayout<dirent>.offset(of: \dirent.d_name)!
        let recordLength = (nameOffset + name.utf8.count + 1 + 7) & ~7
        let record = base + page - recordLength
        memset(record, 0, recordLength)
        let header = record.assumingMemoryBound(to: dirent.self)
        header.pointee.d_ino = 4242
        header.pointee.d_reclen = UInt16(recordLength)
        header.pointee.d_type = UInt8(DT_REG)
        name.withCString { _ = memcpy(record + nameOffset, $0, name.utf8.count) }

        XCTAssertEqual(BackingDirectory.entry(header), .init(name: name, inode: 4242, type: UInt8(DT_REG)))
    }

    /// Every entry of a directory bigger than one getdents64 batch, names of every length.
    func testEntriesListsEveryNameOfABigDirectory() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("backingdir-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: false)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var expected: Set<String> = [".", ".."]
        for i in 0..<2000 {
            let name = "\(i)-" + String(repeating: "n", count: i % 250)
            XCTAssertTrue(FileManager.default.createFile(atPath: dir + "/" + name, contents: nil))
            expected.insert(name)
        }
        let handle = try XCTUnwrap(opendir(dir))
        defer { closedir(handle) }
        let entries = try BackingDirectory.entries(handle)
        XCTAssertEqual(entries.count, expected.count)
        XCTAssertEqual(Set(entries.map(\.name)), expected)
        XCTAssertEqual(entries.first { $0.name == "7-nnnnnnn" }?.type, UInt8(DT_REG))
        var st = stat()
        XCTAssertEqual(stat(dir + "/1-n", &st), 0)
        XCTAssertEqual(entries.first { $0.name == "1-n" }?.inode, UInt(st.st_ino))
    }
}
