import XCTest
import Glibc
import CMKFormat
@testable import CMKFuse

/// The file id an inode keeps once read (`Inode.noteFileID`), stored as two words: it must come
/// back byte for byte, whatever the bytes.
final class InodeFileIDTests: XCTestCase {
    private func rootInode() throws -> Inode {
        let fd = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        XCTAssertGreaterThanOrEqual(fd, 0)
        return Inode(root: fd, identity: InodeIdentity(device: 1, inode: 1))
    }

    func testAnUnreadIDIsUnknown() throws {
        XCTAssertNil(try rootInode().fileID)
    }

    func testNotedIDsComeBackByteForByte() throws {
        let inode = try rootInode()
        let patterns: [[UInt8]] = [Array(0..<16), Array(repeating: 0xFF, count: 16),
                                   [0x80] + Array(repeating: 0, count: 15), Array(repeating: 0, count: 15) + [1]]
        for bytes in patterns {
            let id = FileID(bytes: bytes)!
            inode.noteFileID(id)
            XCTAssertEqual(inode.fileID, id)
        }
        for _ in 0..<1000 {
            let id = try FileID.random()
            inode.noteFileID(id)
            XCTAssertEqual(inode.fileID?.bytes, id.bytes)
        }
    }
}
