import Foundation
import XCTest

/// `cmkfs-kms` as an operator meets it: the same conventions as `cmkfs` (a version, an example
/// in every --help, JSON for what a script reads, `--kms-dir` for the keystore).
final class KMSCommandLineTests: IntegrationTestCase {
    override var mountsInSetUp: Bool { false }

    func kms(_ arguments: [String]) -> ShellResult {
        Shell.run(KMSProcess.binary, arguments, timeout: 60, logDir: fx.logs)
    }

    /// Every command path of cmkfs-kms (`[]`, `["serve"]`, `["key"]`, `["key", "list"]`, …).
    func commandPaths(_ path: [String] = []) -> [[String]] {
        let help = kms(path + ["--help"]).stdout
        var result = [path]
        guard let section = help.components(separatedBy: "SUBCOMMANDS:\n").dropFirst().first else { return result }
        for line in section.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.isEmpty { break }
            guard line.hasPrefix("  "), !line.hasPrefix("   "), let name = line.split(separator: " ").first else { continue }
            result += commandPaths(path + [String(name)])
        }
        return result
    }

    func testVersionIsCmkfsVersion() {
        let version = kms(["--version"])
        XCTAssertTrue(version.succeeded, "\(version)")
        XCTAssertEqual(version.stdout, fx.cmkfs(["--version"]).stdout)
        XCTAssertFalse(version.stdout.isEmpty)
    }

    func testEveryCommandHelpHasAnExampleAndNamesTheKeystoreLikeCmkfs() {
        let paths = commandPaths()
        XCTAssertGreaterThanOrEqual(paths.count, 12, "\(paths)")
        for path in paths {
            let r = kms(path + ["--help"])
            let name = (["cmkfs-kms"] + path).joined(separator: " ")
            XCTAssertEqual(r.status, 0, "\(name) --help: \(r)")
            let text = r.stdout.split(whereSeparator: \.isWhitespace).joined(separator: " ")
            XCTAssertTrue(text.contains("Example: \(name)"), "\(name) --help has no 'Example: \(name) …':\n\(r.stdout)")
            // The old name still works but is not taught.
            XCTAssertFalse(text.contains("--state"), "\(name) --help still shows --state:\n\(r.stdout)")
        }
        XCTAssertTrue(kms(["key", "list", "--help"]).stdout.contains("--kms-dir"))
        XCTAssertTrue(fx.cmkfs(["mount", "--help"]).stdout.contains("--kms-dir"), "cmkfs calls it --kms-dir too")
    }

    func testKeyListJSONAndTheOldKeystoreFlagName() throws {
        let dir = fx.root + "/kms-state"
        let created = kms(["key", "create", "--kms-dir", dir])
        XCTAssertTrue(created.succeeded, "\(created)")
        let keyID = try XCTUnwrap(created.stdout.split(separator: " ").first.map(String.init))
        XCTAssertTrue(kms(["key", "rotate", keyID, "--state", dir]).succeeded, "--state is still accepted")
        XCTAssertTrue(kms(["key", "disable", keyID, "--version", "1", "--kms-dir", dir]).succeeded)

        let r = kms(["key", "list", "--kms-dir", dir, "--json"])
        XCTAssertTrue(r.succeeded, "\(r)")
        let json = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any], r.stdout)
        XCTAssertEqual(json["format"] as? Int, 1)
        let keys = try XCTUnwrap(json["keys"] as? [[String: Any]])
        XCTAssertEqual(keys.count, 1)
        XCTAssertEqual(keys.first?["key_id"] as? String, keyID)
        let versions = try XCTUnwrap(keys.first?["versions"] as? [[String: Any]])
        XCTAssertEqual(versions.map { $0["version"] as? Int }, [1, 2])
        XCTAssertEqual(versions.map { $0["state"] as? String }, ["disabled", "enabled"])
        // Without --json: the line format scripts of old read, unchanged.
        XCTAssertEqual(kms(["key", "list", "--state", dir]).stdout, "\(keyID) v1=disabled v2=enabled\n")

        // Both names at once is a usage error, not a silent choice.
        let both = kms(["key", "list", "--kms-dir", dir, "--state", fx.root + "/other"])
        XCTAssertEqual(both.status, 64, "\(both)")
        XCTAssertTrue(both.stderr.contains("--kms-dir"), "\(both)")
    }
}
