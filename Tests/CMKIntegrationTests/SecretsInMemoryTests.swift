import Foundation
import XCTest
import CMKCrypto
import CMKFormat
import CMKVolume

/// What the mount daemon's memory holds, read as root through /proc/PID/mem (what a core dump or
/// `gcore` would copy, and more: pages excluded from dumps too). After `key revoke` and the last
/// close, neither the file's DEK (cipher contexts of the workers, the cache) nor the master key
/// (the embedded KMS) may be anywhere in it; while a key is held, its `SecretBytes` copy sits on
/// pages excluded from core dumps.
final class SecretsInMemoryTests: IntegrationTestCase {
    /// Prints, per needle (hex argument), the mappings that hold it: "i start dd|-" lines.
    static let scanner = """
        import re, sys
        pid, needles = sys.argv[1], [bytes.fromhex(h) for h in sys.argv[2:]]
        flags, regions, current = {}, [], None
        for line in open("/proc/%s/smaps" % pid):
            m = re.match(r"^([0-9a-f]+)-([0-9a-f]+) (\\S+) ", line)
            if m:
                current = int(m.group(1), 16)
                regions.append((current, int(m.group(2), 16), m.group(3), line.strip()))
            elif line.startswith("VmFlags:"):
                flags[current] = line.split()[1:]
        mem = open("/proc/%s/mem" % pid, "rb", buffering=0)
        scanned = 0
        for start, end, perms, desc in regions:
            if not perms.startswith("r") or "[vsyscall]" in desc or "[vvar" in desc: continue
            at = start
            while at < end:
                size = min(1 << 20, end - at)
                try:
                    mem.seek(at); chunk = mem.read(size + 64 if at + size < end else size)
                except OSError:
                    break
                scanned += len(chunk)
                for i, n in enumerate(needles):
                    j = chunk.find(n)
                    while j >= 0 and j < size:
                        print(i, hex(at + j), "dd" if "dd" in flags.get(start, []) else "-", desc.split()[-1] if len(desc.split()) > 5 else "anon")
                        j = chunk.find(n, j + 1)
                at += size
        print("scanned", scanned)
        """

    /// (needle index, mapping excluded from dumps) for every place the needles are found.
    func scan(_ pid: pid_t, _ needles: [[UInt8]]) -> [(Int, Bool)] {
        let hex = needles.map { $0.map { String(format: "%02x", $0) }.joined() }
        let r = python(Self.scanner, [String(pid)] + hex, timeout: 300)
        XCTAssertTrue(r.succeeded, "\(r)")
        XCTAssertTrue(r.stdout.contains("scanned "), r.stdout)
        return r.stdout.split(separator: "\n").filter { !$0.hasPrefix("scanned") }.compactMap { line in
            let f = line.split(separator: " ")
            guard f.count >= 3, let i = Int(f[0]) else { return nil }
            return (i, f[2] == "dd")
        }
    }

    func testNoDataOrMasterKeyInTheDaemonAfterRevokeAndClose() throws {
        sh("printf held-content > \(mnt)/f")
        let backing = try fx.backing("f")
        try fx.unmount()
        // The keys, through the API, with the volume at rest.
        let volume = try Volume.open(at: vol, kmsDir: fx.kms)
        let fd = open(backing, O_RDONLY)
        let fileID = try ContentFile.readFileID(fd: fd)
        close(fd)
        let dek = try volume.fileKey(fileID).withUnsafeBytes { Array($0) }
        volume.metadata.close()
        var masters: [[UInt8]] = []
        for keyFile in try FileManager.default.contentsOfDirectory(atPath: fx.kms) where keyFile.hasSuffix(".key") {
            let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: "\(fx.kms)/\(keyFile)")))
            for entry in stride(from: 12, to: bytes.count, by: 48) { masters.append(Array(bytes[(entry + 16)..<(entry + 48)])) }
        }
        XCTAssertFalse(masters.isEmpty)
        try fx.mount()
        let pid = try XCTUnwrap(fx.lockPID())

        // A process holds the file open and has read it: the DEK is cached and a worker used it.
        let ready = fx.plain + "/ready", go = fx.plain + "/go"
        let holderScript = """
            import os, sys, time
            fd = os.open(sys.argv[1], os.O_RDONLY)
            assert os.pread(fd, 100, 0) == b"held-content"
            open(sys.argv[2], "w").close()
            while not os.path.exists(sys.argv[3]): time.sleep(0.01)
            os.close(fd)
            """
        try holderScript.write(toFile: fx.logs + "/holder.py", atomically: true, encoding: .utf8)
        let holder = Process()
        holder.executableURL = URL(fileURLWithPath: Shell.python)
        holder.arguments = [fx.logs + "/holder.py", mnt + "/f", ready, go]
        try holder.run()
        defer { if holder.isRunning { holder.terminate() } }
        waitUntil(deadline: 20) { FileManager.default.fileExists(atPath: ready) }

        // Positive control: the scan finds the DEK while it is in use, and its SecretBytes copy
        // is on a page excluded from core dumps.
        let inUse = scan(pid, [dek])
        XCTAssertFalse(inUse.isEmpty, "the scan must find the DEK while the file is in use")
        XCTAssertTrue(inUse.contains { $0.1 }, "the cached DEK (SecretBytes) must sit on MADV_DONTDUMP pages: \(inUse)")

        let revoke = fx.cmkfs(["key", "revoke", vol, "--kms-dir", fx.kms, "--reason", "memory check"])
        XCTAssertTrue(revoke.succeeded, "\(revoke)")
        _ = FileManager.default.createFile(atPath: go, contents: nil)
        holder.waitUntilExit()

        let after = scan(pid, [dek] + masters)
        XCTAssertEqual(after.filter { $0.0 == 0 }.count, 0, "the data key is still in the daemon's memory after revoke and close: \(after)")
        XCTAssertEqual(after.filter { $0.0 > 0 }.count, 0, "a master key is in the daemon's memory: \(after)")
        XCTAssertTrue(fx.cmkfs(["key", "enable", vol, "--kms-dir", fx.kms]).succeeded)
    }
}
