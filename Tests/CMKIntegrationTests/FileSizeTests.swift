import Foundation
import XCTest

/// Truncate, holes, writes past the end and unaligned I/O: each operation is done on a file in
/// the mount and on a plain reference file, and the two must read back identically (also after
/// a remount).
final class FileSizeTests: IntegrationTestCase {
    /// Regression guard for the gocryptfs #1024 class of bug: shrinking a file after writing
    /// more than one block must leave exactly the prefix, whether the shrink goes through the
    /// writing descriptor, a new descriptor or truncate(1).
    func testTruncateShrinkAfterWritingMoreThanOneBlock() throws {
        let program = """
        import os, sys
        mount, ref, src = sys.argv[1], sys.argv[2], sys.argv[3]
        data = open(src, 'rb').read()
        cases = [(4097, 4096), (5000, 4097), (8192, 100), (10000, 4095), (10000, 0),
                 (65536 + 7, 65536 + 6), (65536 + 7, 8193), (200000, 123457), (4096 * 5, 4096 * 2)]
        for i, (written, cut) in enumerate(cases):
            for root in (mount, ref):
                p = os.path.join(root, 'same-fd-%d' % i)
                fd = os.open(p, os.O_CREAT | os.O_RDWR | os.O_TRUNC, 0o644)
                assert os.write(fd, data[:written]) == written
                os.ftruncate(fd, cut)
                got = os.pread(fd, written + 10, 0)
                assert got == data[:cut], ('same fd', p, written, cut, len(got))
                os.close(fd)
                q = os.path.join(root, 'new-fd-%d' % i)
                with open(q, 'wb') as f:
                    f.write(data[:written])
                fd = os.open(q, os.O_RDWR)
                os.ftruncate(fd, cut)
                os.close(fd)
                with open(q, 'rb') as f:
                    got = f.read()
                assert got == data[:cut], ('new fd', q, written, cut, len(got))
                assert os.stat(q).st_size == cut
        print('ok')
        """
        let src = plain + "/src"
        makeRandomFile(src, size: 200_000)
        let ref = plain + "/ref"
        sh("mkdir -p \(ref)")
        XCTAssertEqual(py(program, [mnt, ref, src]), "ok\n")
        // truncate(1) on a file written by dd: the path-based truncate(2).
        sh("dd if=\(src) of=\(mnt)/dd-file bs=4096 count=3 status=none && truncate -s 5000 \(mnt)/dd-file")
        sh("dd if=\(src) of=\(ref)/dd-file bs=4096 count=3 status=none && truncate -s 5000 \(ref)/dd-file")
        XCTAssertEqual(sh("stat -c %s \(mnt)/dd-file"), "5000\n")
        XCTAssertEqual(manifest(mnt), manifest(ref))
        try fx.remount()
        XCTAssertEqual(manifest(mnt), manifest(ref), "after a remount")
        // Every shrunk file is exactly a prefix of the source.
        XCTAssertEqual(sh("cmp -n 5000 \(mnt)/dd-file \(src) && echo same"), "same\n")
    }

    func testTruncateUpReadsZeros() throws {
        let src = plain + "/src"
        makeRandomFile(src, size: 10_000)
        let ref = plain + "/ref"
        sh("mkdir -p \(ref)")
        // From an unaligned size, from a block boundary, from empty, and up by less than a block.
        for root in [mnt, ref] {
            sh("""
               set -e; cd \(root)
               head -c 5000 \(src) > a && truncate -s 20000 a
               head -c 8192 \(src) > b && truncate -s 9000 b
               : > c && truncate -s 12289 c
               head -c 10 \(src) > d && truncate -s 11 d
               head -c 4000 \(src) > e && truncate -s 4096 e && truncate -s 3000 e && truncate -s 7000 e
               """)
        }
        XCTAssertEqual(sh("stat -c '%n %s' \(mnt)/a \(mnt)/b \(mnt)/c \(mnt)/d \(mnt)/e"),
                       "\(mnt)/a 20000\n\(mnt)/b 9000\n\(mnt)/c 12289\n\(mnt)/d 11\n\(mnt)/e 7000\n")
        // The grown tails are zeros: compare against /dev/zero directly, not only the reference.
        sh("cmp -n 5000 \(mnt)/a \(src) && tail -c 15000 \(mnt)/a | cmp -n 15000 - /dev/zero")
        sh("tail -c 808 \(mnt)/b | cmp -n 808 - /dev/zero && cmp -n 12289 \(mnt)/c /dev/zero")
        sh("tail -c 4000 \(mnt)/e | cmp -n 4000 - /dev/zero && cmp -n 3000 \(mnt)/e \(src)")
        XCTAssertEqual(manifest(mnt), manifest(ref))
        try fx.remount()
        XCTAssertEqual(manifest(mnt), manifest(ref), "after a remount")
    }

    func testWritePastEndOfFileLeavesZeroGap() throws {
        let src = plain + "/src"
        makeRandomFile(src, size: 10_000)
        let ref = plain + "/ref"
        sh("mkdir -p \(ref)")
        for root in [mnt, ref] {
            sh("""
               set -e; cd \(root)
               head -c 1000 \(src) > a
               dd if=\(src) of=a bs=1 seek=50000 count=100 conv=notrunc status=none
               dd if=\(src) of=b bs=1 seek=12305 count=5000 conv=notrunc status=none
               head -c 4096 \(src) > c
               dd if=\(src) of=c bs=4096 seek=3 count=1 conv=notrunc status=none
               """)
        }
        XCTAssertEqual(sh("stat -c %s \(mnt)/a \(mnt)/b \(mnt)/c"), "50100\n17305\n16384\n")
        sh("dd if=\(mnt)/a bs=1000 skip=1 count=49 status=none | cmp -n 49000 - /dev/zero")
        sh("head -c 12305 \(mnt)/b | cmp -n 12305 - /dev/zero")
        sh("dd if=\(mnt)/c bs=4096 skip=1 count=2 status=none | cmp -n 8192 - /dev/zero")
        XCTAssertEqual(manifest(mnt), manifest(ref))
        try fx.remount()
        XCTAssertEqual(manifest(mnt), manifest(ref), "after a remount")
    }

    func testSparseTruncateTo10GiBStaysSmallOnDisk() throws {
        let tenGiB = 10 * 1024 * 1024 * 1024
        sh("truncate -s 10G \(mnt)/sparse")
        XCTAssertEqual(sh("stat -c %s \(mnt)/sparse"), "\(tenGiB)\n")
        // The backing file is sparse: du counts allocated blocks, not the apparent size.
        let backingSparse = try fx.backing("sparse")
        let duKiB = Int(sh("du -k \(backingSparse) | cut -f1").trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
        XCTAssertGreaterThanOrEqual(duKiB, 0)
        XCTAssertLessThan(duKiB, 1024, "a 10 GiB hole should allocate (almost) nothing")
        XCTAssertEqual(sh("stat -c %s \(backingSparse)"), "\(24 + tenGiB / 4096 * 4124)\n")
        // Reads anywhere in the hole, including the very end, are zeros.
        sh("dd if=\(mnt)/sparse bs=4096 skip=\(tenGiB / 4096 - 1) count=1 status=none | cmp -n 4096 - /dev/zero")
        sh("dd if=\(mnt)/sparse bs=65536 skip=12345 count=16 status=none | cmp -n 1048576 - /dev/zero")
        // A write in the middle lands there and nowhere else.
        sh("printf 'in the middle' | dd of=\(mnt)/sparse bs=1 seek=\(5 * 1024 * 1024 * 1024 + 3) conv=notrunc status=none")
        XCTAssertEqual(sh("dd if=\(mnt)/sparse bs=1 skip=\(5 * 1024 * 1024 * 1024) count=16 status=none | tr '\\000' '0'"), "000in the middle")
        XCTAssertEqual(sh("stat -c %s \(mnt)/sparse"), "\(tenGiB)\n")
        try fx.remount()
        XCTAssertEqual(sh("stat -c %s \(mnt)/sparse"), "\(tenGiB)\n")
        XCTAssertEqual(sh("dd if=\(mnt)/sparse bs=1 skip=\(5 * 1024 * 1024 * 1024 + 3) count=13 status=none"), "in the middle")
        sh("dd if=\(mnt)/sparse bs=4096 skip=\(tenGiB / 4096 - 1) count=1 status=none | cmp -n 4096 - /dev/zero")
        let duAfter = Int(sh("du -k \(backingSparse) | cut -f1").trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
        XCTAssertLessThan(duAfter, 1024)
        XCTAssertEqual(sh("du -k \(mnt)/sparse | cut -f1"), "\(duAfter)\n", "du through the mount shows the backing allocation")
    }

    /// Random unaligned pwrite/pread/ftruncate, the same sequence on the mount and on a plain
    /// file; every read is compared as it happens, and the whole file at the end.
    func testUnalignedWritesAndReadsMatchPlainFile() throws {
        let program = """
        import os, random, sys
        mount, ref, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
        rng = random.Random(seed)
        fds = [os.open(p, os.O_CREAT | os.O_RDWR, 0o644) for p in (mount, ref)]
        reads = 0
        for step in range(600):
            op = rng.random()
            if op < 0.55:
                off = rng.choice([rng.randrange(0, 300000), rng.randrange(0, 40) * 4096 + rng.choice([-1, 0, 1, 4095])])
                off = max(off, 0)
                data = rng.randbytes(rng.choice([1, 2, 17, 4095, 4096, 4097, rng.randrange(1, 30000)]))
                for fd in fds:
                    assert os.pwrite(fd, data, off) == len(data)
            elif op < 0.62:
                size = rng.randrange(0, 320000)
                for fd in fds:
                    os.ftruncate(fd, size)
            else:
                off = rng.randrange(0, 330000)
                n = rng.choice([1, 3, 4096, 5000, rng.randrange(1, 70000)])
                a, b = (os.pread(fd, n, off) for fd in fds)
                assert a == b, ('read mismatch at step', step, off, n, len(a), len(b))
                reads += 1
            sizes = [os.fstat(fd).st_size for fd in fds]
            assert sizes[0] == sizes[1], ('size mismatch at step', step, sizes)
        for fd in fds:
            os.close(fd)
        a, b = (open(p, 'rb').read() for p in (mount, ref))
        assert a == b, 'final content differs'
        print(reads > 100, len(a) > 0)
        """
        let seed = Int.random(in: 1...1_000_000)
        print("[cmkfs-it] unaligned I/O seed \(seed)")
        XCTAssertEqual(py(program, [mnt + "/rand", plain + "/rand", String(seed)]), "True True\n", "seed \(seed)")
        // dd with odd block sizes and offsets, conv=notrunc, on both.
        for root in [mnt, plain] {
            sh("""
               set -e; cd \(root)
               dd if=/dev/zero of=rand bs=3 seek=33333 count=7 conv=notrunc status=none
               printf 'xyz' | dd of=rand bs=1 seek=4095 conv=notrunc status=none
               printf 'abcdefgh' | dd of=rand bs=1 seek=8190 conv=notrunc status=none
               """)
        }
        XCTAssertEqual(sha256(mnt + "/rand"), sha256(plain + "/rand"))
        // Reads at odd offsets and lengths through dd.
        for (bs, skip, count) in [(1, 4093, 10), (7, 1000, 3000), (4097, 3, 5), (12345, 1, 7)] {
            XCTAssertEqual(sh("dd if=\(mnt)/rand bs=\(bs) skip=\(skip) count=\(count) status=none | sha256sum"),
                           sh("dd if=\(plain)/rand bs=\(bs) skip=\(skip) count=\(count) status=none | sha256sum"),
                           "dd bs=\(bs) skip=\(skip) count=\(count)")
        }
        try fx.remount()
        XCTAssertEqual(sha256(mnt + "/rand"), sha256(plain + "/rand"), "after a remount")
    }
    /// Sizes and offsets near 2^63 are EFBIG, as on ext4, and the daemon lives on: truncate to
    /// 2^63-1 used to overflow the backing-size arithmetic and stop the mount for every user.
    func testHugeSizesAndOffsetsAreEFBIGAndTheMountLivesOn() {
        let program = """
        import errno, os, sys
        f = sys.argv[1] + '/big'
        open(f, 'w').close()
        def err(call):
            try:
                call(); return 'ok'
            except OSError as e:
                return errno.errorcode[e.errno]
        for n in [2**63 - 1, 2**63 - 4096, 2**62, 999999999999999999, 2**44]:
            print('truncate', n, err(lambda: os.truncate(f, n)))
        fd = os.open(f, os.O_RDWR)
        print('pwrite', err(lambda: os.pwrite(fd, b'x', 2**63 - 2)))
        print('fallocate', err(lambda: os.posix_fallocate(fd, 2**62, 4096)))
        print('pread', os.pread(fd, 10, 2**63 - 20))
        os.close(fd)
        print('size', os.stat(f).st_size)
        """
        XCTAssertEqual(py(program, [mnt]), """
            truncate 9223372036854775807 EFBIG
            truncate 9223372036854771712 EFBIG
            truncate 4611686018427387904 EFBIG
            truncate 999999999999999999 EFBIG
            truncate 17592186044416 EFBIG
            pwrite EFBIG
            fallocate EFBIG
            pread b''
            size 0

            """)
        XCTAssertEqual(sh("echo alive > \(mnt)/after && cat \(mnt)/after"), "alive\n", "the mount still serves")
    }
}
