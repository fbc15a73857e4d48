import Foundation
import XCTest

/// `cmkfs mount --writeback-cache`: the kernel buffers writes and sends them later, through any
/// writable handle of the inode. Data must come back exactly (also after a remount), O_APPEND
/// must stay atomic, and a cache flush (the kill switch) must not lose a write it accepted.
final class WritebackCacheTests: IntegrationTestCase {
    override func setUpWithError() throws {
        try super.setUpWithError()
        try fx.unmount()
        let r = fx.cmkfs(["mount", vol, mnt, "--kms-dir", fx.kms, "--writeback-cache"])
        XCTAssertTrue(r.succeeded, "\(r)")
    }

    func testStressWithTheWritebackCacheThenRemount() throws {
        let script = StressTests.script
        let run = { (args: [String]) in
            Shell.run(Shell.python, [script, "--mount", self.mnt, "--state", self.plain + "/state"] + args,
                      timeout: 90, logDir: self.fx.logs, label: "stress.py " + args.joined(separator: " "))
        }
        let r = run(["--workers", "3", "--seconds", "15", "--seed", "\(StressTests.fixedSeed)", "--hang-seconds", "30"])
        XCTAssertTrue(r.succeeded, "stress with --writeback-cache: \(r)")
        try fx.unmount()
        XCTAssertTrue(fx.cmkfs(["mount", vol, mnt, "--kms-dir", fx.kms, "--writeback-cache"]).succeeded)
        let v = run(["--verify"])
        XCTAssertTrue(v.succeeded, "re-verify after the remount: \(v)")
    }

    func testSmallRandomWritesAndAppendsComeBackExactly() throws {
        let out = py("""
        import os, random, sys
        from multiprocessing import Process
        d = sys.argv[1]
        rng = random.Random(7)
        model = bytearray(300_000)
        fd = os.open(f"{d}/r", os.O_CREAT | os.O_RDWR, 0o644)
        os.write(fd, bytes(model))
        for _ in range(3000):
            off = rng.randrange(0, len(model) - 9000); n = rng.randrange(1, 9000)
            data = rng.randbytes(n)
            os.pwrite(fd, data, off); model[off:off + n] = data
        os.close(fd)
        # Two writers appending fixed-size records through O_APPEND descriptors at once.
        def appender(tag):
            fd = os.open(f"{d}/log", os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o644)
            for i in range(2000):
                os.write(fd, f"{tag}{i:06d}".encode().ljust(100, b".") + b"\\n")
            os.close(fd)
        ps = [Process(target=appender, args=(t,)) for t in "AB"]
        [p.start() for p in ps]; [p.join() for p in ps]
        assert open(f"{d}/r", "rb").read() == bytes(model), "random writes"
        lines = open(f"{d}/log", "rb").read().split(b"\\n")[:-1]
        assert len(lines) == 4000 and all(len(l) == 100 for l in lines), "torn or lost appends"
        open(f"{sys.argv[2]}/model", "wb").write(bytes(model))
        print("ok")
        """, [mnt, plain], timeout: 120)
        XCTAssertEqual(out, "ok\n")
        try fx.unmount()
        try fx.mount()
        XCTAssertEqual(sha256(mnt + "/r"), sha256(plain + "/model"), "every cached write reached the backing store")
        XCTAssertEqual(sh("grep -c . \(mnt)/log"), "4000\n")
    }

    /// Pages written but not yet sent when the keys are flushed are written back first, with the
    /// key that was valid when they were accepted; without that they would be refused at
    /// writeback (the handle is cut off) and silently lost.
    func testACacheFlushLosesNoAcceptedWrite() throws {
        let out = py("""
        import os, subprocess, sys
        d, binary, vol = sys.argv[1:4]
        data = os.urandom(100_000)
        fd = os.open(f"{d}/pending", os.O_CREAT | os.O_RDWR, 0o644)
        os.write(fd, data)        # accepted into the page cache, not yet sent
        subprocess.run([binary, "cache", "flush", vol], check=True, capture_output=True)
        try:
            os.write(fd, b"after the flush")
            os.fsync(fd)
            print("a write after the flush went through")
        except OSError as e:
            print("refused after the flush:", e.errno in (13, 5))
        try: os.close(fd)
        except OSError: pass
        open(sys.argv[4] + "/pending", "wb").write(data)
        """, [mnt, MountFixture.binary, vol, plain], timeout: 60)
        XCTAssertEqual(out, "refused after the flush: True\n", "a cut-off handle fails at the latest at fsync")
        try fx.unmount()
        try fx.mount()
        let got = try Data(contentsOf: URL(fileURLWithPath: mnt + "/pending"))
        let want = try Data(contentsOf: URL(fileURLWithPath: plain + "/pending"))
        XCTAssertEqual(got.prefix(want.count), want, "the 100,000 bytes accepted before the flush are all there")
    }
}
