import Foundation
import XCTest

// The application-level suites again, mounted with `--fuse-transport io_uring`: the transport
// must be invisible above it (the same results as over /dev/fuse, and as ext4 for the
// conformance report). Each test also fails unless requests really went through the rings
// (`IntegrationTestCase.tearDown`). Linux XCTest discovers only the test methods a class
// declares itself, so each one is named again here; `RingSuiteCoverageTests` fails when a
// parent's test is missing.

final class RingShellToolsTests: ShellToolsTests {
    override var fuseTransport: String? { "io_uring" }
    override func testShellToolsMatchPlainDirectoryAndSurviveRemount() throws { try super.testShellToolsMatchPlainDirectoryAndSurviveRemount() }
}

final class RingAttributeTests: AttributeTests {
    override var fuseTransport: String? { "io_uring" }
    override func testOpeningKeepsTheAccessTimeAndReadingUpdatesIt() throws { try super.testOpeningKeepsTheAccessTimeAndReadingUpdatesIt() }
    override func testChownOfAFileWithoutSetIDBitsDoesNotOpenTheBackingFile() throws { try super.testChownOfAFileWithoutSetIDBitsDoesNotOpenTheBackingFile() }
    override func testUserExtendedAttributes() throws { try super.testUserExtendedAttributes() }
    override func testChmodChownAndTimesShowInStat() throws { try super.testChmodChownAndTimesShowInStat() }
    override func testOtherUsersGetNormalPermissionChecks() throws { try super.testOtherUsersGetNormalPermissionChecks() }
    override func testUnprivilegedWritesTruncatesAndChownsClearSetIDBitsAtOnce() throws { try super.testUnprivilegedWritesTruncatesAndChownsClearSetIDBitsAtOnce() }
    override func testStatfsReportsTheBackingFilesystem() throws { try super.testStatfsReportsTheBackingFilesystem() }
    override func testFallocateReservesAndPunchHoleIsRefused() throws { try super.testFallocateReservesAndPunchHoleIsRefused() }
}

final class RingConformanceTests: ConformanceTests {
    override var fuseTransport: String? { "io_uring" }
    override func testModesFollowTheCallersUmaskWithSetIDBits() { super.testModesFollowTheCallersUmaskWithSetIDBits() }
    override func testSetGroupIDDirectoriesGiveTheirGroup() { super.testSetGroupIDDirectoriesGiveTheirGroup() }
    override func testASecondUserOwnsWhatItMakesAndMayNotMakeDevices() { super.testASecondUserOwnsWhatItMakesAndMayNotMakeDevices() }
    override func testTimesMoveAsOnExt4() { super.testTimesMoveAsOnExt4() }
    override func testRenameOverEveryKindOfTarget() { super.testRenameOverEveryKindOfTarget() }
    override func testHardLinksToEveryKindOfEntry() { super.testHardLinksToEveryKindOfEntry() }
    override func testDeviceNodes() { super.testDeviceNodes() }
    override func testSymlinksOfEveryLengthUpTo4095Bytes() throws { try super.testSymlinksOfEveryLengthUpTo4095Bytes() }
    override func testOpenFlagsAndFileIO() { super.testOpenFlagsAndFileIO() }
    override func testFIFOsAndSocketsWork() { super.testFIFOsAndSocketsWork() }
}

final class RingSpecialEntryTests: SpecialEntryTests {
    override var fuseTransport: String? { "io_uring" }
    override func testDeviceNodesAreKeptButNeverOpenedThroughTheMount() throws { try super.testDeviceNodesAreKeptButNeverOpenedThroughTheMount() }
    override func testLongSymlinkTargetsAreStoredAndRemovedWithTheirLastLink() throws { try super.testLongSymlinkTargetsAreStoredAndRemovedWithTheirLastLink() }
    override func testFileCutInsideItsLastBlockReadsAsEIO() throws { try super.testFileCutInsideItsLastBlockReadsAsEIO() }
    override func testNamesThatAreNotUTF8AreRefusedAndNeverCollide() { super.testNamesThatAreNotUTF8AreRefusedAndNeverCollide() }
}

final class RingConcurrencyTests: ConcurrencyTests {
    override var fuseTransport: String? { "io_uring" }
    override func testFourWritersOnDisjointRangesLoseNothing() throws { try super.testFourWritersOnDisjointRangesLoseNothing() }
    override func testFourWritersOnOverlappingRangesNeverTearBlocks() throws { try super.testFourWritersOnOverlappingRangesNeverTearBlocks() }
    override func testFourAppendersLoseNoLine() throws { try super.testFourAppendersLoseNoLine() }
}

final class RingNamespaceTests: NamespaceTests {
    override var fuseTransport: String? { "io_uring" }
    override func testHardLinkSharesContentAndSurvivesUnlinkOfTheOtherName() throws { try super.testHardLinkSharesContentAndSurvivesUnlinkOfTheOtherName() }
    override func testHardLinkNamesSeeEachOthersChangesImmediately() throws { try super.testHardLinkNamesSeeEachOthersChangesImmediately() }
    override func testReusedInodeNumbersNeverGiveStaleHandles() throws { try super.testReusedInodeNumbersNeverGiveStaleHandles() }
    override func testUnlinkOfLastLinkRemovesKeyRows() throws { try super.testUnlinkOfLastLinkRemovesKeyRows() }
    override func testUnlinkedFilesLoseTheirKeyRowsSoonAndBeforeUnmountReturns() throws { try super.testUnlinkedFilesLoseTheirKeyRowsSoonAndBeforeUnmountReturns() }
    override func testRenameOverExistingFileAndAcrossDirectories() throws { try super.testRenameOverExistingFileAndAcrossDirectories() }
    override func testRenameNoReplaceAndExchange() throws { try super.testRenameNoReplaceAndExchange() }
    override func testFifoWorksAndDeviceNodesNeedCapMknod() throws { try super.testFifoWorksAndDeviceNodesNeedCapMknod() }
    override func testExclusiveCreateOfExistingFileFails() throws { try super.testExclusiveCreateOfExistingFileFails() }
}

/// Every test of a parent suite has its ring twin above.
final class RingSuiteCoverageTests: XCTestCase {
    func testEveryParentTestRunsOverTheRing() throws {
        let here = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        let twins = try String(contentsOf: here.appendingPathComponent("RingTransportSuites.swift"), encoding: .utf8)
        for file in ["ShellToolsTests", "AttributeTests", "Conformance/ConformanceTests", "Conformance/SpecialEntryTests",
                     "ConcurrencyTests", "NamespaceTests"] {
            let text = try String(contentsOf: here.appendingPathComponent(file + ".swift"), encoding: .utf8)
            let regex = try NSRegularExpression(pattern: #"^    func (test\w+)\("#, options: .anchorsMatchLines)
            for match in regex.matches(in: text, range: NSRange(text.startIndex..., in: text)) {
                let name = String(text[Range(match.range(at: 1), in: text)!])
                XCTAssertTrue(twins.contains("override func \(name)("), "\(file).\(name) has no twin over io_uring")
            }
        }
    }
}
