import XCTest
@testable import CMKMetadata

/// A binding row's name is on disk (docs/on-disk-format.md): `cmkfs.link.` and the tag in
/// lower-case hex, two digits a byte. Written faster, never differently.
final class LinkRowNameTests: MetadataTestCase {
    func testRowNameIsThePrefixAndLowerCaseHex() {
        XCTAssertEqual(MetadataStore.linkRowName([0x00, 0x0F, 0xA5, 0xFF, 0x10]), "cmkfs.link.000fa5ff10")
        XCTAssertEqual(MetadataStore.linkRowName([]), "cmkfs.link.")
        for _ in 0..<200 {
            let tag = (0..<Int.random(in: 0...40)).map { _ in UInt8.random(in: 0...255) }
            XCTAssertEqual(MetadataStore.linkRowName(tag), "cmkfs.link." + tag.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined())
        }
    }

    /// The row `changeLinks` writes is the one `hasLink` finds, and only for its own tag.
    func testABindingIsFoundByItsTagOnly() throws {
        let store = try makeStore()
        let tag = [UInt8](repeating: 0xAB, count: 32)
        try store.insertFileKey(fileID: fileID(1), key(1))
        try store.changeLinks(add: [(fileID(1), tag)])
        XCTAssertTrue(try store.hasLink(fileID: fileID(1), tag: tag))
        XCTAssertFalse(try store.hasLink(fileID: fileID(1), tag: [UInt8](repeating: 0xAC, count: 32)))
        XCTAssertTrue(try store.rows(fileID: fileID(1)).contains { $0.name == "cmkfs.link." + String(repeating: "ab", count: 32) })
    }
}
