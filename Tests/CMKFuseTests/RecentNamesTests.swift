import XCTest
@testable import CMKFuse

/// `RecentNames` keeps a backing name per (directory id, plaintext name): never one directory's
/// for another's, never a long name, never more than its capacity.
final class RecentNamesUnitTests: XCTestCase {
    private let a = [UInt8](repeating: 1, count: 16), b = [UInt8](repeating: 2, count: 16)

    func testANameIsKeptPerDirectoryID() {
        var recent = RecentNames()
        recent.note(a, "x", backingName: "AAAA")
        recent.note(b, "x", backingName: "BBBB")
        XCTAssertEqual(recent.find(a, "x"), "AAAA")
        XCTAssertEqual(recent.find(b, "x"), "BBBB")
        // Ids differing in their last byte only (the second word) are two directories.
        var c = a
        c[15] = 9
        XCTAssertNil(recent.find(c, "x"))
        XCTAssertNil(recent.find(a, "y"))
        recent.drop(a, "x")
        XCTAssertNil(recent.find(a, "x"))
        XCTAssertEqual(recent.find(b, "x"), "BBBB")
    }

    /// POSIX names are bytes: Swift's `String ==` calls "caf\u{e9}" and "cafe\u{301}" equal
    /// (canonical equivalence), but they are two files, so they are two entries.
    func testNamesThatDifferOnlyInUnicodeNormalizationAreTwoEntries() {
        var recent = RecentNames()
        recent.note(a, "caf\u{e9}", backingName: "NFC")
        XCTAssertNil(recent.find(a, "cafe\u{301}"))
        recent.note(a, "cafe\u{301}", backingName: "NFD")
        XCTAssertEqual(recent.find(a, "caf\u{e9}"), "NFC")
        XCTAssertEqual(recent.find(a, "cafe\u{301}"), "NFD")
        recent.drop(a, "cafe\u{301}")
        XCTAssertEqual(recent.find(a, "caf\u{e9}"), "NFC")
        XCTAssertEqual(recent.count, 1)
    }

    func testLongNamesAndMalformedIdsAreNotKept() {
        var recent = RecentNames()
        recent.note(a, "long", backingName: "L.abcdef")
        XCTAssertNil(recent.find(a, "long"))
        recent.note(Array(a.prefix(8)), "short-id", backingName: "AAAA")
        XCTAssertNil(recent.find(Array(a.prefix(8)), "short-id"))
        XCTAssertEqual(recent.count, 0)
    }

    func testTheTableStaysWithinItsCapacity() {
        var recent = RecentNames()
        for i in 0..<(RecentNames.capacity + 10) { recent.note(a, "f\(i)", backingName: "B\(i)") }
        XCTAssertLessThanOrEqual(recent.count, RecentNames.capacity)
        XCTAssertEqual(recent.find(a, "f\(RecentNames.capacity + 9)"), "B\(RecentNames.capacity + 9)")
    }
}
