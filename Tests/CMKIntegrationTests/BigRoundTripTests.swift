import Foundation
import XCTest

/// Volume-sized round trips through a remount, with their wall times printed (not asserted).
final class BigRoundTripTests: IntegrationTestCase {
    func testOneGiBFileRoundTrip() throws {
        let size = 1024 * 1024 * 1024
        let src = plain + "/big"
        _ = timed("1 GiB: generate plain input", "dd if=/dev/urandom of=\(src) bs=1M count=1024 status=none", bytes: size)
        let expected = sha256(src)
        let write = timed("1 GiB: cp into the mount", "cp \(src) \(mnt)/big", timeout: 600, bytes: size)
        let unmount = Date()
        try fx.unmount()
        report("1 GiB: unmount", seconds: Date().timeIntervalSince(unmount))
        try fx.mount()
        XCTAssertEqual(sh("stat -c %s \(mnt)/big"), "\(size)\n")
        // A new mount starts with an empty page cache: this read goes through the daemon.
        let readStart = Date()
        let got = sha256(mnt + "/big")
        let read = Date().timeIntervalSince(readStart)
        report("1 GiB: sha256 read through the mount after remount", seconds: read, bytes: size)
        XCTAssertEqual(got, expected)
        // The backing file is the plaintext size plus 24 + 28 bytes per 4 KiB block.
        XCTAssertEqual(sh("stat -c %s \(try fx.backing("big"))"), "\(24 + size / 4096 * 4124)\n")
        print("[cmkfs-it] 1 GiB totals: write \(String(format: "%.1f", write)) s, read \(String(format: "%.1f", read)) s")
    }

    func testTwentyThousandSmallFilesRoundTrip() throws {
        let count = 20_000
        let src = plain + "/small"
        // Deterministic sizes 0...9000 (with the block edges well represented) across 20 dirs.
        let generate = """
        import os, random, sys
        root, count = sys.argv[1], int(sys.argv[2])
        rng = random.Random(20000)
        edges = [0, 1, 4095, 4096, 4097, 8191, 8192, 8193, 9000]
        blob = os.urandom(9000 + 65536)
        total = 0
        for i in range(count):
            d = os.path.join(root, 'dir%02d' % (i % 20))
            if i < 20:
                os.makedirs(d)
            size = edges[i % len(edges)] if i % 10 == 0 else rng.randrange(0, 9001)
            start = rng.randrange(0, 65536)
            with open(os.path.join(d, 'file%05d' % i), 'wb') as f:
                f.write(blob[start:start + size])
            total += size
        print(total)
        """
        let totalBytes = Int(py(generate, [src, String(count)], timeout: 300).trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
        XCTAssertGreaterThan(totalBytes, 0)
        let expected = manifest(src)
        XCTAssertEqual(expected.split(separator: "\n").filter { $0.hasPrefix("f ") }.count, count)

        _ = timed("20k files: tar copy into the mount", "tar cf - -C \(plain) small | tar xf - -C \(mnt)", timeout: 600, bytes: totalBytes)
        XCTAssertEqual(try fx.fileCount(), count)
        let unmount = Date()
        try fx.unmount()
        report("20k files: unmount", seconds: Date().timeIntervalSince(unmount))
        try fx.mount()
        let readStart = Date()
        let got = manifest(mnt + "/small", timeout: 600)
        report("20k files: manifest (stat + sha256 of every file) after remount", seconds: Date().timeIntervalSince(readStart), bytes: totalBytes)
        XCTAssertEqual(got, expected)
        // A tar of the tree read back through the mount equals one of the source.
        XCTAssertEqual(sh("tar cf - -C \(mnt) --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner small | sha256sum", timeout: 600),
                       sh("tar cf - -C \(plain) --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner small | sha256sum", timeout: 600))
        _ = timed("20k files: rm -r", "rm -r \(mnt)/small", timeout: 600)
        XCTAssertEqual(try fx.fileCount(), 0, "every key row went with its file")
    }
}
