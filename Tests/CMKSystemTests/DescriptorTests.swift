import XCTest
import Glibc
import CMKSystem

final class DescriptorTests: XCTestCase {
    private var directory = ""

    override func setUpWithError() throws {
        var template = Array("/tmp/cmksystem-XXXXXX".utf8CString)
        directory = String(cString: try XCTUnwrap(mkdtemp(&template)))
    }

    override func tearDown() {
        _ = try? Descriptor.cwd.unlink(directory + "/f")
        _ = try? Descriptor.cwd.unlink(directory + "/g")
        rmdir(directory)
    }

    private func isOpen(_ fd: Int32) -> Bool { fcntl(fd, F_GETFD) >= 0 }

    /// A lock another open file holds is waited for up to the deadline, then refused (false);
    /// once it is let go, the next wait takes it.
    func testLockWaitsUpToItsDeadlineForAnotherHolder() throws {
        let holder = try FileDescriptor.open(directory + "/f", O_RDWR | O_CREAT | O_CLOEXEC, mode: 0o600)
        let waiter = try FileDescriptor.open(directory + "/f", O_RDWR | O_CLOEXEC)
        XCTAssertTrue(try holder.descriptor.lock(LOCK_EX, waitingUpTo: 0, poll: 0.001))
        XCTAssertFalse(try waiter.descriptor.lock(LOCK_EX, waitingUpTo: 0.02, poll: 0.005))
        XCTAssertFalse(try waiter.descriptor.lock(LOCK_SH, waitingUpTo: 0, poll: 0.005))
        try holder.descriptor.lock(LOCK_UN)
        XCTAssertTrue(try waiter.descriptor.lock(LOCK_EX, waitingUpTo: 0, poll: 0.005))
    }

    func testDroppedDescriptorIsClosed() throws {
        var raw: Int32 = -1
        do {
            let file = try FileDescriptor.open(directory + "/f", O_RDWR | O_CREAT | O_CLOEXEC, mode: 0o600)
            raw = file.rawValue
            XCTAssertTrue(isOpen(raw))
        }
        XCTAssertFalse(isOpen(raw), "a FileDescriptor that goes out of scope closes its descriptor")
    }

    func testReleasedDescriptorStaysOpenAndCloseClosesOnce() throws {
        let file = try FileDescriptor.open(directory + "/f", O_RDWR | O_CREAT | O_CLOEXEC, mode: 0o600)
        let raw = file.release()
        XCTAssertTrue(isOpen(raw))
        let again = FileDescriptor(adopting: raw)
        try again.close()
        XCTAssertFalse(isOpen(raw))
    }

    /// fchmodat2 with AT_EMPTY_PATH changes the mode through an O_PATH descriptor, which
    /// fchmod(2) refuses (EBADF); setattr relies on it to skip /proc.
    func testChmodSelfThroughAnOPathDescriptor() throws {
        _ = try FileDescriptor.open(directory + "/f", O_RDWR | O_CREAT | O_CLOEXEC, mode: 0o600)
        let path = try FileDescriptor.open(directory + "/f", OpenFlags.path | O_CLOEXEC)
        try path.descriptor.chmodSelf(mode: 0o4751)
        XCTAssertEqual(try Descriptor.cwd.stat(directory + "/f").st_mode & 0o7777, 0o4751)
        XCTAssertThrowsError(try path.descriptor.fchmod(0o600), "fchmod(2) on an O_PATH descriptor is EBADF")
    }

    func testErrorKeepsCallPathAndErrno() throws {
        do {
            _ = try FileDescriptor.open(directory + "/missing", O_RDONLY | O_CLOEXEC)
            XCTFail("opened a missing file")
        } catch {
            XCTAssertEqual(error.errno, .ENOENT)
            XCTAssertEqual(error.call, "open", "a plain path is named with the plain call")
            XCTAssertEqual(error.path, directory + "/missing")
            XCTAssertEqual(error.description, "open \(directory)/missing: No such file or directory")
        }
        let dir = try FileDescriptor.open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        do {
            _ = try dir.descriptor.openat("missing", O_RDONLY | O_CLOEXEC)
            XCTFail("opened a missing file")
        } catch {
            XCTAssertEqual(error.description, "openat missing: No such file or directory")
        }
    }

    func testPositionalIOAndAtCalls() throws {
        let dir = try FileDescriptor.open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        let file = try dir.descriptor.openat("f", O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, mode: 0o600)
        let bytes: [UInt8] = Array("hello, world".utf8)
        try bytes.withUnsafeBytes { try file.descriptor.pwriteAll($0, at: 100) }
        XCTAssertEqual(try file.descriptor.fstat().st_size, 112)
        var back = [UInt8](repeating: 0, count: 64)
        let n = try back.withUnsafeMutableBytes { try file.descriptor.preadFully(into: $0, at: 100) }
        XCTAssertEqual(Array(back.prefix(n)), bytes, "preadFully stops at end of file")
        try dir.descriptor.rename("f", to: "g", in: dir.descriptor)
        XCTAssertThrowsError(try dir.descriptor.stat("f", flags: AT_SYMLINK_NOFOLLOW)) { XCTAssertEqual(($0 as? SystemError)?.errno, .ENOENT) }
        try dir.descriptor.symlink("f", target: "g")
        XCTAssertEqual(try dir.descriptor.readlink("f"), Array("g".utf8))
        XCTAssertThrowsError(try dir.descriptor.rename("f", to: "g", in: dir.descriptor, flags: Descriptor.noReplace)) {
            XCTAssertEqual(($0 as? SystemError)?.errno, .EEXIST, "renameat2 with RENAME_NOREPLACE")
        }
        try dir.descriptor.unlink("f")
    }

    /// The trap `FileDescriptor.swift` warns of, pinned: a temporary `FileDescriptor` is closed
    /// as soon as `descriptor` has been read, before the call on it runs (a `_read` accessor
    /// does not change that; only a closure that borrows the owner would). If Swift ever keeps
    /// the temporary alive through the call, this fails and the warning can go.
    func testTemporaryIsClosedBeforeTheCallOnItsDescriptorRuns() throws {
        let raw = try FileDescriptor.open(directory + "/f", O_RDWR | O_CREAT | O_CLOEXEC, mode: 0o600).release()
        XCTAssertThrowsError(try FileDescriptor(adopting: raw).descriptor.fstat()) { error in
            XCTAssertEqual((error as? SystemError)?.errno, .EBADF, "the temporary closed the descriptor before fstat ran")
        }
        XCTAssertFalse(isOpen(raw))
        // Kept in a named binding, it lives to the end of its scope.
        let file = FileDescriptor(adopting: try FileDescriptor.open(directory + "/f", O_RDONLY | O_CLOEXEC).release())
        XCTAssertEqual(try file.descriptor.fstat().st_size, 0)
    }

    func testAnonymousFileLeavesNoNameAndPathsResolve() throws {
        let file = try FileDescriptor.anonymousFile(in: directory)
        try file.descriptor.writeAll(Array("x".utf8))
        XCTAssertEqual(try file.descriptor.fstat().st_size, 1)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory), [], "unlinked at once")
        XCTAssertNotEqual(fcntl(file.rawValue, F_GETFD) & FD_CLOEXEC, 0)
        XCTAssertFalse(file.descriptor.isTerminal)

        try Descriptor.cwd.symlink(directory + "/f", target: directory)
        XCTAssertEqual(try ProcessControls.realPath(directory + "/f/."), try ProcessControls.realPath(directory))
        XCTAssertThrowsError(try ProcessControls.realPath(directory + "/missing")) { XCTAssertEqual(($0 as? SystemError)?.errno, .ENOENT) }
        XCTAssertEqual(try ProcessControls.workingDirectory(), FileManager.default.currentDirectoryPath)
    }

    func testHiddenConstantsAreTheKernelsValues() {
        // The values of <asm-generic/fcntl.h> and <linux/fcntl.h> on x86_64 and arm64.
        XCTAssertEqual(OpenFlags.path, 0o10000000)
        XCTAssertEqual(OpenFlags.tmpFile, 0o20000000 | O_DIRECTORY)
        XCTAssertEqual(OpenFlags.noAccessTime, 0o1000000)
        XCTAssertEqual(OpenFlags.atEmptyPath, 0x1000)
    }

    /// A handle reopens the very object it was made of, through any mount descriptor of its
    /// filesystem, and another object's handle differs even where the inode number is reused.
    func testFileHandleReopensItsObjectAndTellsObjectsApart() throws {
        let dir = try FileDescriptor.open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        do { let f = try dir.descriptor.openat("f", O_RDWR | O_CREAT | O_CLOEXEC, mode: 0o600); try f.descriptor.writeAll(Array("x".utf8)) }
        let handle = try dir.descriptor.fileHandle("f")
        let object = try dir.descriptor.stat("f")
        do {
            let again = try handle.open(mount: dir.descriptor, flags: OpenFlags.path | O_CLOEXEC)
            XCTAssertEqual(try again.descriptor.stat("", flags: OpenFlags.atEmptyPath).st_ino, object.st_ino)
        }
        XCTAssertEqual(try dir.descriptor.fileHandle("f"), handle, "one object, one handle")
        try dir.descriptor.unlink("f")
        do { let g = try dir.descriptor.openat("f", O_RDWR | O_CREAT | O_CLOEXEC, mode: 0o600); _ = g.rawValue }
        XCTAssertNotEqual(try dir.descriptor.fileHandle("f"), handle, "a new object under the old name has another handle")
        XCTAssertThrowsError(try handle.open(mount: dir.descriptor, flags: OpenFlags.path | O_CLOEXEC).rawValue) {
            XCTAssertEqual(($0 as? SystemError)?.errno, Errno(rawValue: ESTALE), "the unlinked object is gone")
        }
    }

    /// Every listing starts at the first entry, and the descriptor stays open.
    func testDirectoryStreamStartsFromTheTopEachTime() throws {
        let dir = try FileDescriptor.open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        do { let f = try dir.descriptor.openat("f", O_RDWR | O_CREAT | O_CLOEXEC, mode: 0o600); _ = f.rawValue }
        func names() throws -> [String] { try dir.descriptor.entries().map(\.name).sorted() }
        XCTAssertEqual(try names(), [".", "..", "f"])
        XCTAssertEqual(try names(), [".", "..", "f"], "a second stream reads from the start again")
        XCTAssertTrue(isOpen(dir.rawValue))
        XCTAssertGreaterThan(try dir.descriptor.statfs().f_bsize, 0)
    }
}
