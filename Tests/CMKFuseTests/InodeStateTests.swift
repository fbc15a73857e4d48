import XCTest
import Glibc
import CMKSystem
import CMKFormat
@testable import CMKFuse

/// An inode keeps its mutable fields (entry, audit name, directory id, file id) under one lock
/// and its file handle inline: each field must still read back as set, apart from the others,
/// and the handle must still tell a reused inode number's objects apart.
final class InodeStateTests: XCTestCase {
    private func handle(_ generation: UInt8, length: Int = 8) -> CMKSystem.FileHandle {
        CMKSystem.FileHandle(bytes: [UInt8(length), 0, 0, 0, 1, 0, 0, 0] + [0x39, 0x30, 0, 0, generation] + Array(repeating: 0, count: length - 5))
    }
    private func file(_ generation: UInt8 = 1, inode: UInt = 12345) -> Inode {
        Inode(handle: handle(generation), identity: InodeIdentity(device: 7, inode: inode), kind: S_IFREG)
    }
    private func link(_ name: String, directory: UInt8 = 1) -> EntryLink {
        EntryLink(directoryID: Array(repeating: directory, count: 16), backingName: name)
    }

    func testAnEntryIsUncheckedUntilAnOpenChecksIt() {
        let inode = file()
        XCTAssertNil(inode.entry.seen)
        let a = link("QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo")
        inode.noteEntry(a, verified: false)
        XCTAssertEqual(inode.entry.seen, a)
        XCTAssertFalse(inode.entry.verified)
        inode.entryVerified(a)
        XCTAssertTrue(inode.entry.verified)
        // Noted again by a later lookup (a new string, the same entry): still checked.
        inode.noteEntry(link(String("QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo".reversed().reversed())), verified: false)
        XCTAssertEqual(inode.entry.seen, a)
        XCTAssertTrue(inode.entry.verified)
    }

    func testAnotherEntryIsUncheckedAndAStaleCheckDoesNotCount() {
        let inode = file()
        let a = link("first-backing-name-of-the-file-xxxxxxxxxx"), b = link("second-backing-name-of-the-file-xxxxxxxxx")
        inode.noteEntry(a, verified: true)
        XCTAssertTrue(inode.entry.verified)
        inode.noteEntry(b, verified: false)
        XCTAssertEqual(inode.entry.seen, b)
        XCTAssertFalse(inode.entry.verified, "another entry must be checked again")
        inode.entryVerified(a)
        XCTAssertFalse(inode.entry.verified, "a check of an entry no longer seen does not check the current one")
        // The same name in another directory is another entry.
        inode.noteEntry(link(b.backingName, directory: 2), verified: false)
        inode.entryVerified(b)
        XCTAssertFalse(inode.entry.verified)
        inode.entryVerified(nil)
        XCTAssertFalse(inode.entry.verified)
    }

    func testRemovingTheSeenEntryForgetsItAndOnlyThatOne() {
        let inode = file()
        let a = link("a-backing-name-long-enough-for-the-heap-xx"), b = link("b-backing-name-long-enough-for-the-heap-xx")
        inode.noteEntry(a, verified: true)
        inode.entryRemoved(b)
        XCTAssertEqual(inode.entry.seen, a)
        XCTAssertTrue(inode.entry.verified)
        inode.entryRemoved(a)
        XCTAssertNil(inode.entry.seen)
        XCTAssertFalse(inode.entry.verified)
        inode.noteEntry(b, verified: true)
        XCTAssertEqual(inode.entry.seen, b)
        XCTAssertTrue(inode.entry.verified)
    }

    /// Fields that share the lock do not disturb each other.
    func testFieldsAreIndependent() throws {
        let inode = file()
        let id = try FileID.random()
        inode.noteFileID(id)
        inode.noteDirectoryID([9, 9, 9])
        let a = link("entry-name-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx")
        inode.noteEntry(a, verified: true)
        let parent = Inode(handle: handle(2), identity: InodeIdentity(device: 7, inode: 2), kind: S_IFDIR)
        inode.withAuditName { $0 = AuditName(parent: parent, text: "name", generation: 3) }
        XCTAssertEqual(inode.fileID, id)
        XCTAssertEqual(inode.directoryID, [9, 9, 9])
        XCTAssertEqual(inode.entry.seen, a)
        XCTAssertTrue(inode.entry.verified)
        let name = inode.withAuditName { $0 }
        XCTAssertTrue(name?.parent === parent)
        XCTAssertEqual(name?.text, "name")
        XCTAssertEqual(name?.generation, 3)
        inode.withAuditName { $0 = nil }
        inode.entryRemoved(a)
        XCTAssertEqual(inode.fileID, id)
        XCTAssertEqual(inode.directoryID, [9, 9, 9])
    }

    /// A reused inode number names another object: another generation in the handle.
    func testHandlesTellAReusedInodeNumberApart() throws {
        let first = file(1), again = file(1), reused = file(2)
        XCTAssertTrue(first.sameObject(as: again))
        XCTAssertFalse(first.sameObject(as: reused))
        XCTAssertTrue(first.isAnchored(by: handle(1)))
        XCTAssertFalse(first.isAnchored(by: handle(2)))
        XCTAssertFalse(first.sameObject(as: file(1, inode: 12346)), "another identity is another object")
        // Long handles (on the heap) too.
        let long = Inode(handle: handle(1, length: 20), identity: InodeIdentity(device: 7, inode: 5), kind: S_IFREG)
        XCTAssertTrue(long.isAnchored(by: handle(1, length: 20)))
        XCTAssertFalse(long.isAnchored(by: handle(2, length: 20)))
        // A held descriptor (no file handles) is the same object as another held one only.
        let fd = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        XCTAssertGreaterThanOrEqual(fd, 0)
        let held = Inode(root: fd, identity: InodeIdentity(device: 7, inode: 12345))
        XCTAssertFalse(held.sameObject(as: first))
        XCTAssertFalse(first.sameObject(as: held))
        XCTAssertFalse(held.isAnchored(by: handle(1)))
        XCTAssertEqual(held.withDescriptor(mountFD: -1) { $0 }, fd, "a held inode's requests use its descriptor")
    }
}
