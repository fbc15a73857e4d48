import Foundation
import XCTest
import CMKAudit
import CMKCrypto

/// The auditor's script in docs/audit-format.md ("Verifying without cmkfs"), run as printed
/// against logs this code writes: it must accept an intact multi-segment log and reject an
/// edited record, so the document cannot drift from the format.
final class DocumentedVerifierTests: XCTestCase {
    var dir = ""

    override func tearDown() {
        _ = try? Process.run(URL(fileURLWithPath: "/usr/bin/chattr"), arguments: ["-R", "-a", dir]).waitUntilExit()
        try? FileManager.default.removeItem(atPath: dir)
    }

    /// The python block under "## Verifying without cmkfs".
    func documentedScript() throws -> String {
        let doc = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("docs/audit-format.md")
        let text = try String(contentsOf: doc, encoding: .utf8)
        let section = try XCTUnwrap(text.range(of: "## Verifying without cmkfs"))
        let rest = text[section.upperBound...]
        let open = try XCTUnwrap(rest.range(of: "```python\n"))
        let close = try XCTUnwrap(rest[open.upperBound...].range(of: "```"))
        return String(rest[open.upperBound..<close.lowerBound])
    }

    func run(_ script: String, _ keyHex: String) throws -> (Int32, String) {
        let scriptPath = dir + "-verify.py", keyPath = dir + "-key.hex"
        try script.write(toFile: scriptPath, atomically: true, encoding: .utf8)
        try keyHex.write(toFile: keyPath, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: scriptPath); try? FileManager.default.removeItem(atPath: keyPath) }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        p.arguments = [scriptPath, dir, keyPath]
        let out = Pipe()
        p.standardOutput = out
        p.standardError = out
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    func testTheDocumentedScriptVerifiesARealLogAndCatchesAnEdit() throws {
        dir = NSTemporaryDirectory() + "cmkfs-docverify-\(UUID().uuidString.prefix(8))"
        let keyBytes = try SecureRandom.bytes(32)
        let key = keyBytes.withUnsafeBytes { SecretBytes(copying: $0) }
        // Small segments, so the chain crosses files as it does in a long-lived volume.
        let log = try AuditLog.open(directory: dir, key: key, volumeID: "00112233445566778899aabbccddeeff",
                                    checkpoints: nil, segmentLimit: 2048)
        for i in 1...40 {
            try log.append(AuditEvent("open", fileID: String(repeating: "ab", count: 16), path: "/d/f\(i) \"quoted\"\ttab",
                                      keyID: "mk-1", keyVersion: 1, cache: "miss", uid: 0, gid: 0, pid: 1, process: "cat"))
        }
        try log.close()
        XCTAssertGreaterThan(AuditSegments.list(dir).count, 3)
        let script = try documentedScript()
        let hexKey = keyBytes.map { String(format: "%02x", $0) }.joined()
        let (ok, okOut) = try run(script, hexKey)
        XCTAssertEqual(ok, 0, okOut)
        XCTAssertTrue(okOut.contains("40 records, chain intact"), okOut)
        // Edit one record's uid: the script must fail.
        let seg = AuditSegments.list(dir)[1].path
        _ = try? Process.run(URL(fileURLWithPath: "/usr/bin/chattr"), arguments: ["-a", seg]).waitUntilExit()
        let text = try String(contentsOfFile: seg, encoding: .utf8)
        try text.replacingOccurrences(of: #""uid":0"#, with: #""uid":1"#).write(toFile: seg, atomically: false, encoding: .utf8)
        let (bad, badOut) = try run(script, hexKey)
        XCTAssertNotEqual(bad, 0, badOut)
        XCTAssertTrue(badOut.contains("bad MAC"), badOut)
    }
}
