import Glibc
import XCTest
@testable import CMKSystem

/// The ring entry's byte layout: a request as the kernel writes it (fuse_in_header in `in_out`,
/// the opcode's struct in `op_in`, the rest in the payload) must reach libfuse exactly as
/// /dev/fuse would deliver it, and a reply must land where the kernel reads it.
final class FuseRingLayoutTests: XCTestCase {
    func testARequestIsLaidOutContiguouslyInFrontOfItsPayload() throws {
        let ring = try FuseRing(payloadCapacity: 8192)
        // A WRITE: 40-byte header, 40-byte fuse_write_in, 5 bytes of data.
        var header = [UInt8](repeating: 0, count: 40)
        withUnsafeBytes(of: UInt32(40 + 40 + 5)) { header.replaceSubrange(0..<4, with: $0) }
        withUnsafeBytes(of: UInt32(16)) { header.replaceSubrange(4..<8, with: $0) }
        withUnsafeBytes(of: UInt64(77)) { header.replaceSubrange(8..<16, with: $0) }
        ring.header.copyMemory(from: header, byteCount: 40)
        let opIn = [UInt8](0..<40)
        (ring.header + 128).copyMemory(from: opIn, byteCount: 40)
        ring.payload.copyMemory(from: Array("hello".utf8), byteCount: 5)
        ring.header.storeBytes(of: UInt64(77), toByteOffset: 256 + 8, as: UInt64.self)
        ring.header.storeBytes(of: UInt32(5), toByteOffset: 256 + 16, as: UInt32.self)

        XCTAssertEqual(ring.commitID, 77)
        XCTAssertEqual(ring.payloadLength, 5)
        let request = try XCTUnwrap(ring.contiguousRequest())
        XCTAssertEqual(request.length, 85)
        let bytes = [UInt8](UnsafeRawBufferPointer(start: request.start, count: request.length))
        XCTAssertEqual(Array(bytes[0..<40]), header)
        XCTAssertEqual(Array(bytes[40..<80]), opIn)
        XCTAssertEqual(Array(bytes[80..<85]), Array("hello".utf8))
        XCTAssertEqual(request.start + 80, ring.payload, "the payload is not copied")
    }

    func testLengthsThatDoNotAddUpAreRefused() throws {
        let ring = try FuseRing(payloadCapacity: 8192)
        ring.header.storeBytes(of: UInt32(40 + 200), toByteOffset: 0, as: UInt32.self)  // op struct > 128 bytes
        ring.header.storeBytes(of: UInt32(0), toByteOffset: 256 + 16, as: UInt32.self)
        XCTAssertNil(ring.contiguousRequest())
        ring.header.storeBytes(of: UInt32(40), toByteOffset: 0, as: UInt32.self)
        ring.header.storeBytes(of: UInt32(100), toByteOffset: 256 + 16, as: UInt32.self)  // payload longer than the request
        XCTAssertNil(ring.contiguousRequest())
    }

    func testARepliesHeaderAndPartsLandWhereTheKernelReadsThem() throws {
        let ring = try FuseRing(payloadCapacity: 16)
        var out = [UInt8](repeating: 0, count: 16)
        withUnsafeBytes(of: UInt64(9)) { out.replaceSubrange(8..<16, with: $0) }
        let a = Array("abc".utf8), b = Array("defgh".utf8)
        let stored = out.withUnsafeBytes { po in a.withUnsafeBytes { pa in b.withUnsafeBytes { pb in
            let iov = [iovec(iov_base: UnsafeMutableRawPointer(mutating: po.baseAddress!), iov_len: 16),
                       iovec(iov_base: UnsafeMutableRawPointer(mutating: pa.baseAddress!), iov_len: 3),
                       iovec(iov_base: UnsafeMutableRawPointer(mutating: pb.baseAddress!), iov_len: 5)]
            return iov.withUnsafeBufferPointer { ring.storeReply($0) }
        } } }
        XCTAssertTrue(stored)
        XCTAssertEqual(ring.header.load(fromByteOffset: 8, as: UInt64.self), 9)
        XCTAssertEqual(ring.header.load(fromByteOffset: 256 + 16, as: UInt32.self), 8, "payload_sz")
        XCTAssertEqual([UInt8](UnsafeRawBufferPointer(start: ring.payload, count: 8)), Array("abcdefgh".utf8))
        let big = [UInt8](repeating: 1, count: 17)
        let tooBig = out.withUnsafeBytes { po in big.withUnsafeBytes { pb in
            [iovec(iov_base: UnsafeMutableRawPointer(mutating: po.baseAddress!), iov_len: 16),
             iovec(iov_base: UnsafeMutableRawPointer(mutating: pb.baseAddress!), iov_len: 17)].withUnsafeBufferPointer { ring.storeReply($0) }
        } }
        XCTAssertFalse(tooBig, "larger than the payload buffer")
        ring.storeError(5, unique: 9)
        XCTAssertEqual(ring.header.load(fromByteOffset: 4, as: Int32.self), -5)
        XCTAssertEqual(ring.header.load(fromByteOffset: 256 + 16, as: UInt32.self), 0)
    }

    func testTheKernelsCPUListGivesTheQueueCount() {
        XCTAssertEqual(ThreadPlacement.possibleCPUHighest("0-1\n"), 1)
        XCTAssertEqual(ThreadPlacement.possibleCPUHighest("0-3,6"), 6)
        XCTAssertEqual(ThreadPlacement.possibleCPUHighest("0"), 0)
        XCTAssertNil(ThreadPlacement.possibleCPUHighest("zero"))
        XCTAssertGreaterThanOrEqual(ThreadPlacement.possibleCPUs, ProcessInfo.processInfo.activeProcessorCount)
    }
}
