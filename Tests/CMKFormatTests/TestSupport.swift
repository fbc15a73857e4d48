import Foundation
import Glibc
import XCTest
import CMKCrypto
@testable import CMKFormat

/// SplitMix64: a tiny seeded PRNG so randomized tests replay exactly.
struct SplitMix64 {
    private var state: UInt64
    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in `range` (modulo bias is irrelevant here).
    mutating func int(_ range: ClosedRange<Int>) -> Int {
        range.lowerBound + Int(next() % UInt64(range.upperBound - range.lowerBound + 1))
    }

    mutating func chance(_ percent: Int) -> Bool { int(0...99) < percent }

    mutating func bytes(_ count: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        out.withUnsafeMutableBytes { p in
            var i = 0
            while i < count {
                var word = next()
                let n = min(8, count - i)
                withUnsafeBytes(of: &word) { w in
                    (p.baseAddress! + i).copyMemory(from: w.baseAddress!, byteCount: n)
                }
                i += n
            }
        }
        return out
    }
}

/// A private temporary directory, removed when the value is released.
final class TempDir {
    let path: String
    init() throws {
        path = FileManager.default.temporaryDirectory
            .appendingPathComponent("cmkformat-tests-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: false)
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }
    func file(_ name: String) -> String { path + "/" + name }
}

/// One encrypted backing file plus the plaintext it should hold.
final class Harness {
    let path: String
    private(set) var fd: Int32
    let file: ContentFile
    let key: SecretBytes
    private(set) var scratch: ContentScratch
    private(set) var size = 0
    /// The in-memory model of the plaintext.
    private(set) var model: [UInt8] = []
    /// Off for huge sparse files: only `size` is tracked, not the model.
    var tracksModel = true
    var layout: BlockLayout { file.layout }

    init(path: String, layout: BlockLayout, key: SecretBytes? = nil, fileID: FileID? = nil) throws {
        self.path = path
        fd = Glibc.open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno)!) }
        self.key = try key ?? SecretBytes.random(count: 32)
        file = ContentFile(fd: fd, fileID: try fileID ?? FileID.random(), layout: layout)
        scratch = ContentScratch(layout: layout)
        try file.writeHeader()
    }

    deinit { close(fd) }

    /// A new descriptor and a new scratch, as after a remount.
    func reopen() throws {
        close(fd)
        fd = Glibc.open(path, O_RDWR | O_CLOEXEC)
        guard fd >= 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno)!) }
        scratch = ContentScratch(layout: layout)
    }

    var content: ContentFile { ContentFile(fd: fd, fileID: file.fileID, layout: layout) }

    func write(_ data: [UInt8], at offset: Int) throws {
        let newSize = try data.withUnsafeBytes { d in
            try content.write(d, at: offset, size: size, key: key, scratch: scratch)
        }
        if tracksModel && !data.isEmpty {
            if model.count < offset + data.count {
                model += [UInt8](repeating: 0, count: offset + data.count - model.count)
            }
            model.replaceSubrange(offset..<(offset + data.count), with: data)
        }
        size = newSize
    }

    func truncate(to newSize: Int) throws {
        try content.truncate(from: size, to: newSize, key: key, scratch: scratch)
        if !tracksModel {
        } else if newSize < model.count {
            model.removeLast(model.count - newSize)
        } else {
            model += [UInt8](repeating: 0, count: newSize - model.count)
        }
        size = newSize
    }

    /// Reads through the content layer without touching the model.
    func read(at offset: Int, count: Int, key: SecretBytes? = nil) throws -> [UInt8] {
        var out = [UInt8](repeating: 0xCC, count: count)
        let n = try out.withUnsafeMutableBytes { d in
            try content.read(into: d, at: offset, size: size, key: key ?? self.key, scratch: scratch)
        }
        return Array(out.prefix(n))
    }

    func readAll() throws -> [UInt8] { try read(at: 0, count: size) }

    /// Reads plaintext block `index` (its whole length).
    func readBlock(_ index: Int) throws -> [UInt8] {
        try read(at: index * layout.blockSize, count: layout.plaintextLength(ofBlock: index, plaintextSize: size))
    }

    /// The model's plaintext of block `index`.
    func modelBlock(_ index: Int) -> [UInt8] {
        let start = index * layout.blockSize
        return Array(model[start..<(start + layout.plaintextLength(ofBlock: index, plaintextSize: size))])
    }

    func fileStat() -> stat {
        var st = stat()
        precondition(fstat(fd, &st) == 0)
        return st
    }

    var backingSize: Int { Int(fileStat().st_size) }

    // Raw access to the backing bytes, for tampering.
    func raw(at offset: Int, count: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        let n = out.withUnsafeMutableBytes { pread(fd, $0.baseAddress!, count, off_t(offset)) }
        precondition(n == count, "short raw read")
        return out
    }

    func rawWrite(_ bytes: [UInt8], at offset: Int) {
        let n = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress!, bytes.count, off_t(offset)) }
        precondition(n == bytes.count, "short raw write")
    }

    func rawDiskBlock(_ index: Int) -> [UInt8] {
        raw(at: layout.diskOffset(ofBlock: index),
            count: layout.plaintextLength(ofBlock: index, plaintextSize: size) + BlockLayout.overhead)
    }
}

/// The `ContentError` that `body` throws; records a failure when it throws nothing or something else.
func expectContentError<T>(_ body: () throws -> T, _ message: String = "",
                           file: StaticString = #filePath, line: UInt = #line) -> ContentError? {
    do {
        _ = try body()
        XCTFail("expected a ContentError, got success. \(message)", file: file, line: line)
    } catch let error as ContentError {
        return error
    } catch {
        XCTFail("expected a ContentError, got \(error). \(message)", file: file, line: line)
    }
    return nil
}

/// Asserts that `body` fails with `.corruptBlock(index: index, …)`.
func assertCorruptBlock<T>(_ index: Int, _ message: String = "", file: StaticString = #filePath, line: UInt = #line,
                           _ body: () throws -> T) {
    guard let error = expectContentError(body, message, file: file, line: line) else { return }
    guard case .corruptBlock(let got, _) = error else {
        return XCTFail("expected corruptBlock(\(index)), got \(error). \(message)", file: file, line: line)
    }
    XCTAssertEqual(got, index, "wrong block index in \(error). \(message)", file: file, line: line)
}

/// Byte-wise equality without per-element generic overhead in debug builds.
func sameBytes(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    a.count == b.count && a.withUnsafeBytes { x in b.withUnsafeBytes { y in
        a.isEmpty || memcmp(x.baseAddress!, y.baseAddress!, a.count) == 0
    } }
}
