import Foundation
import XCTest
import CMKCrypto
import CMKFormat
import CMKVolume

/// Nothing secret reaches the volume directory: no plaintext (file content or xattr value), no
/// data key, no master key, in any file, in any encoding this test can think of.
final class ConfidentialityTests: IntegrationTestCase {
    /// Every regular file under `dir`, recursively, symlinks not followed.
    func regularFiles(under dir: String) -> [String] {
        var out: [String] = []
        guard let walker = FileManager.default.enumerator(atPath: dir) else { return out }
        while let rel = walker.nextObject() as? String {
            let path = dir + "/" + rel
            var st = stat()
            if lstat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG { out.append(path) }
        }
        return out.sorted()
    }

    /// Asserts no file under the volume holds any of `needles`, searching with grep -r over the
    /// whole directory (data/, meta.db and its WAL, config, lock, log: nothing excluded).
    func assertVolumeLacks(_ needles: [String], _ when: String, file: StaticString = #filePath, line: UInt = #line) {
        let patterns = needles.map { "-e \(Shell.quote($0))" }.joined(separator: " ")
        let r = fx.sh("grep -r -a -F -l \(patterns) \(vol)")
        // grep exits 1 for "no match", 0 for a match, 2 for trouble.
        XCTAssertEqual(r.status, 1, "\(when): plaintext found in the volume (or grep failed): \(r)", file: file, line: line)
    }

    func testNoPlaintextMarkerAnywhereInTheVolume() throws {
        let marker = "CMKIT-" + randomHex(26)
        let program = """
        import os, sys
        d, m = sys.argv[1], sys.argv[2].encode()
        line = m + b'\\n'
        open(d + '/small', 'wb').write(m)
        with open(d + '/big', 'wb') as f:                       # ~2.5 MiB of marker lines
            for _ in range(80):
                f.write(line * 1000)
        with open(d + '/straddle', 'wb') as f:                  # the marker across a block edge
            f.write(b'.' * (4096 - len(m) // 2) + m + b'.' * 100)
        fd = os.open(d + '/unaligned', os.O_CREAT | os.O_RDWR, 0o644)
        for i in range(200):                                    # small appends and overwrites
            os.pwrite(fd, m, i * 37)
        os.ftruncate(fd, 5000); os.ftruncate(fd, 3000); os.fsync(fd); os.close(fd)
        os.makedirs(d + '/sub/deeper')
        open(d + '/sub/deeper/renamed-later', 'wb').write(line * 300)
        os.rename(d + '/sub/deeper/renamed-later', d + '/sub/renamed')
        os.link(d + '/sub/renamed', d + '/sub/hardlink')
        with open(d + '/sparse', 'wb') as f:
            f.seek(3 * 1024 * 1024 + 5); f.write(m)
        os.setxattr(d + '/small', 'user.note', m * 100)
        os.setxattr(d + '/big', 'user.short', m)
        open(d + '/deleted', 'wb').write(line * 50)
        os.unlink(d + '/deleted')
        print(open(d + '/small', 'rb').read() == m, os.getxattr(d + '/small', 'user.note') == m * 100)
        """
        XCTAssertEqual(py(program, [mnt, marker]), "True True\n")
        // The marker is really there in plaintext through the mount (so the searches below mean something).
        XCTAssertEqual(sh("cat \(mnt)/big | grep -c -F -- \(marker)"), "80000\n")
        XCTAssertEqual(sh("grep -c -a -F -- \(marker) \(mnt)/straddle"), "1\n")
        let r = fx.sh("grep -r -a -F -l -- \(marker) \(mnt) | LC_ALL=C sort")
        XCTAssertEqual(r.stdout, ["big", "small", "sparse", "straddle", "sub/hardlink", "sub/renamed", "unaligned"].map { "\(mnt)/\($0)\n" }.joined(), "\(r)")

        // The full marker, its random part alone, and its hex encoding.
        let random = String(marker.suffix(26))
        let hexMarker = marker.utf8.map { String(format: "%02x", $0) }.joined()
        let needles = [marker, random, hexMarker, hexMarker.uppercased()]
        assertVolumeLacks(needles, "while mounted")
        try fx.unmount()
        assertVolumeLacks(needles, "after unmount")
        // Nor in the keystore.
        let kmsGrep = fx.sh("grep -r -a -F -l -e \(marker) -e \(random) \(fx.kms)")
        XCTAssertEqual(kmsGrep.status, 1, "\(kmsGrep)")
        // Positive control: the same grep finds the marker in a plain copy put inside the volume dir.
        sh("printf '%s' \(marker) > \(vol)/control")
        XCTAssertEqual(fx.sh("grep -r -a -F -l -e \(random) \(vol)").stdout, "\(vol)/control\n")
        sh("rm \(vol)/control")
    }

    func testNoDataKeyOrMasterKeyInTheVolume() throws {
        // Files of several sizes, one with xattrs, a hard link, a file in a subdirectory.
        for (i, size) in [0, 1, 4096, 5000, 70_000].enumerated() { makeRandomFile("\(plain)/f\(i)", size: size) }
        sh("mkdir \(mnt)/sub && for i in 0 1 2 3; do cp \(plain)/f$i \(mnt)/f$i; done && cp \(plain)/f4 \(mnt)/sub/f4")
        sh("ln \(mnt)/f3 \(mnt)/sub/f3-link && mkfifo \(mnt)/fifo && ln -s f1 \(mnt)/sym")
        py("import os, sys; os.setxattr(sys.argv[1], 'user.a', os.urandom(300)); os.setxattr(sys.argv[1], 'user.b', b'x')", [mnt + "/f2"])
        try fx.unmount()

        // Unwrap every file's DEK through the API, with the volume unmounted.
        let volume = try Volume.open(at: vol, kmsDir: fx.kms)
        defer { volume.metadata.close() }
        var secrets: [(what: String, bytes: [UInt8])] = []
        var fileIDs: [FileID: String] = [:]
        // cmkfs's own files (each directory's id) are not files of the mount.
        let backing = regularFiles(under: vol + "/data").filter { !$0.hasSuffix("/" + NameCodec.directoryIDFile) }
        XCTAssertEqual(backing.count, 6, "\(backing)")
        for path in backing {
            let fd = open(path, O_RDONLY)
            XCTAssertGreaterThanOrEqual(fd, 0, path)
            defer { close(fd) }
            let fileID = try ContentFile.readFileID(fd: fd)
            let key = try volume.fileKey(fileID)
            let dek = key.withUnsafeBytes { Array($0) }
            XCTAssertEqual(dek.count, 32)
            // The key is the real one: it decrypts the file to the plaintext that was written.
            var st = stat()
            XCTAssertEqual(fstat(fd, &st), 0)
            let size = try XCTUnwrap(volume.layout.plaintextSize(backingSize: Int(st.st_size)))
            let shown = try volume.mountPath(forBackingPath: String(path.dropFirst(vol.count + "/data/".count)))
            let plainName = shown.hasSuffix("f3-link") ? "f3" : URL(fileURLWithPath: shown).lastPathComponent
            let expected = try Data(contentsOf: URL(fileURLWithPath: "\(plain)/\(plainName)"))
            XCTAssertEqual(size, expected.count, path)
            var decrypted = [UInt8](repeating: 0, count: size)
            let n = try decrypted.withUnsafeMutableBytes { buffer in
                try ContentFile(fd: fd, fileID: fileID, layout: volume.layout)
                    .read(into: buffer, at: 0, size: size, key: key, scratch: ContentScratch(layout: volume.layout))
            }
            XCTAssertEqual(n, size)
            XCTAssertEqual(Data(decrypted), expected, "\(path) decrypts with its DEK")
            if fileIDs[fileID] == nil {
                fileIDs[fileID] = path
                secrets.append(("DEK of \(path)", dek))
            }
        }
        XCTAssertEqual(fileIDs.count, 5, "five files (one with two names)")
        XCTAssertEqual(Set(secrets.map(\.bytes)).count, 5, "every file has its own DEK")
        XCTAssertEqual(try fx.fileCount(), 5)

        // The master key material from the keystore (version entries start at byte 12; the key
        // is the last 32 bytes of each 48-byte entry).
        for keyFile in try FileManager.default.contentsOfDirectory(atPath: fx.kms) where keyFile.hasSuffix(".key") {
            let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: "\(fx.kms)/\(keyFile)")))
            XCTAssertEqual(Array(bytes.prefix(4)), Array("CMKK".utf8))
            XCTAssertEqual((bytes.count - 12) % 48, 0)
            for entry in stride(from: 12, to: bytes.count, by: 48) {
                secrets.append(("master key \(keyFile) entry \((entry - 12) / 48)", Array(bytes[(entry + 16)..<(entry + 48)])))
            }
        }
        XCTAssertEqual(secrets.count, 6)

        // Search every file in the volume directory, nothing excluded, for each secret raw, in
        // hex (both cases) and in base64.
        let everything = regularFiles(under: vol)
        XCTAssertTrue(everything.contains(vol + "/meta.db") && everything.contains(vol + "/mount.log")
                      && everything.contains(vol + "/cmkfs.volume"), "\(everything)")
        var searched = 0
        for path in everything {
            let content = try Data(contentsOf: URL(fileURLWithPath: path))
            searched += content.count
            for secret in secrets {
                let hexLower = secret.bytes.map { String(format: "%02x", $0) }.joined()
                let encodings: [(String, Data)] = [
                    ("raw", Data(secret.bytes)), ("hex", Data(hexLower.utf8)), ("HEX", Data(hexLower.uppercased().utf8)),
                    ("base64", Data(Data(secret.bytes).base64EncodedString().dropLast(4).utf8)),
                ]
                for (encoding, needle) in encodings {
                    XCTAssertNil(content.range(of: needle), "\(secret.what) (\(encoding)) found in \(path)")
                }
            }
        }
        // Positive control: the same search does find each file id in the file's own header.
        for (fileID, path) in fileIDs {
            XCTAssertNotNil(try Data(contentsOf: URL(fileURLWithPath: path)).range(of: Data(fileID.bytes)), path)
        }
        print("[cmkfs-it] searched \(everything.count) files, \(searched) bytes, for \(secrets.count) keys")
    }
}
