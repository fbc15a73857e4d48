import XCTest
import Glibc
import CMKSystem

/// `FileHandle` keeps a handle of up to 16 bytes in two words and a longer one in an array:
/// either way the bytes, equality and the open must be those of the kernel's handle.
final class FileHandleTests: XCTestCase {
    /// A `struct file_handle` of `handle` bytes after the header, of type `type`.
    private func handleBytes(type: Int32, _ handle: [UInt8]) -> [UInt8] {
        withUnsafeBytes(of: UInt32(handle.count).littleEndian, Array.init)
            + withUnsafeBytes(of: type.littleEndian, Array.init) + handle
    }

    func testShortHandlesRoundTripInline() {
        for length in 0...8 {
            let bytes = handleBytes(type: 1, (0..<length).map { UInt8(0xA0 + $0) })
            let handle = FileHandle(bytes: bytes)
            XCTAssertTrue(handle.isInline, "a handle of \(bytes.count) bytes is kept inline")
            XCTAssertEqual(handle.bytes, bytes)
            handle.withUnsafeBytes { XCTAssertEqual(Array($0), bytes) }
        }
    }

    func testLongHandlesRoundTripOnTheHeap() {
        for length in [9, 12, 20, 120] {
            let bytes = handleBytes(type: 0x81, (0..<length).map { UInt8(truncatingIfNeeded: 7 * $0 + 1) })
            let handle = FileHandle(bytes: bytes)
            XCTAssertFalse(handle.isInline, "a handle of \(bytes.count) bytes is kept on the heap")
            XCTAssertEqual(handle.bytes, bytes)
        }
    }

    /// Equal bytes, equal handles (and hashes); a handle that differs in one byte (another
    /// generation of a reused inode number), in its length or its type is another handle.
    func testEqualityIsTheBytes() {
        let ino: [UInt8] = [0x39, 0x30, 0, 0], generation: [UInt8] = [1, 2, 3, 4]
        let a = FileHandle(bytes: handleBytes(type: 1, ino + generation))
        let same = FileHandle(bytes: handleBytes(type: 1, ino + generation))
        XCTAssertEqual(a, same)
        XCTAssertEqual(a.hashValue, same.hashValue)
        XCTAssertNotEqual(a, FileHandle(bytes: handleBytes(type: 1, ino + [1, 2, 3, 5])))
        XCTAssertNotEqual(a, FileHandle(bytes: handleBytes(type: 2, ino + generation)))
        XCTAssertNotEqual(a, FileHandle(bytes: handleBytes(type: 1, ino)))
        let long = handleBytes(type: 0x81, Array(repeating: 9, count: 12))
        XCTAssertEqual(FileHandle(bytes: long), FileHandle(bytes: long))
        XCTAssertNotEqual(FileHandle(bytes: long), FileHandle(bytes: handleBytes(type: 0x81, Array(repeating: 9, count: 11) + [8])))
    }

    func testNamesItsInodeNumberInline() {
        let handle = FileHandle(bytes: handleBytes(type: 1, [0x39, 0x30, 0, 0, 7, 7, 7, 7]))
        XCTAssertTrue(handle.names(inode: 12345))
        XCTAssertFalse(handle.names(inode: 12346))
        XCTAssertFalse(FileHandle(bytes: handleBytes(type: 2, [0x39, 0x30, 0, 0, 7, 7, 7, 7])).names(inode: 12345))
    }

    /// A real handle, of whatever length the filesystem gives, opens the object it was taken of:
    /// /tmp's and /dev/shm's (tmpfs: 20 bytes, on the heap), where they exist.
    func testARealHandleOpensItsObject() throws {
        var opened = 0
        for base in ["/tmp", "/var/tmp", "/dev/shm"] {
            var template = Array("\(base)/cmkfh-XXXXXX".utf8CString)
            guard let made = mkdtemp(&template) else { continue }
            let directory = String(cString: made)
            defer { unlink(directory + "/f"); rmdir(directory) }
            let file = try FileDescriptor.open(directory + "/f", O_RDWR | O_CREAT | O_CLOEXEC, mode: 0o600)
            guard let handle = try? file.descriptor.fileHandle("", flags: OpenFlags.atEmptyPath) else { continue }
            XCTAssertEqual(handle.isInline, handle.bytes.count <= FileHandle.inlineCapacity)
            let mount = try FileDescriptor.open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            let again = try handle.open(mount: mount.descriptor, flags: O_RDONLY | O_CLOEXEC)
            var a = stat(), b = stat()
            XCTAssertEqual(fstat(file.rawValue, &a), 0)
            XCTAssertEqual(fstat(again.rawValue, &b), 0)
            XCTAssertEqual(a.st_ino, b.st_ino, "\(base): the handle (\(handle.bytes.count) bytes) opens its own file")
            XCTAssertEqual(a.st_dev, b.st_dev)
            opened += 1
        }
        XCTAssertGreaterThan(opened, 0, "no filesystem here gave a file handle")
    }
}
