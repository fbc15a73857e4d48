import Foundation
import XCTest

/// `cmkfs info PATH`: a file of a live mount as the mount knows it, through the control socket.
final class InfoTests: IntegrationTestCase {
    func info(_ path: String) throws -> [String: Any] {
        let r = fx.cmkfs(["info", path, "--json"])
        XCTAssertTrue(r.succeeded, "\(r)")
        return try XCTUnwrap(JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any], r.stdout)
    }

    func testInfoNamesTheFileItsKeyVersionAndWhetherTheKeyIsCached() throws {
        sh("mkdir \(mnt)/d && head -c 100000 /dev/urandom > \(mnt)/d/f")
        let status = try fx.status()
        let keyID = try XCTUnwrap((status["provider"] as? [String: Any])?["key_id"] as? String)
        var report = try info(mnt + "/d/f")
        XCTAssertEqual(report["format"] as? Int, 1)
        XCTAssertEqual(report["volume"] as? String, vol)
        XCTAssertEqual(report["mountpoint"] as? String, mnt)
        // The id in the key rows, as the header says.
        let ids = sh("sqlite3 \(vol)/meta.db \"SELECT lower(hex(file_id)) FROM file_attrs WHERE name = 'cmkfs.edek'\"")
            .split(separator: "\n").map(String.init)
        let fileID = try XCTUnwrap(report["file_id"] as? String)
        XCTAssertEqual(ids, [fileID])
        XCTAssertEqual(report["key_id"] as? String, keyID)
        XCTAssertEqual(report["key_version"] as? Int, 1)
        XCTAssertGreaterThan(report["backing_bytes"] as? Int ?? 0, 100_000, "ciphertext is the data plus header and tags")
        XCTAssertGreaterThan(report["disk_bytes"] as? Int ?? 0, 0)
        XCTAssertEqual(report["key_cached"] as? Bool, true, "just written: its key is cached")

        // The kill switch drops it; info itself does not load it back.
        XCTAssertTrue(fx.cmkfs(["cache", "flush", vol]).succeeded)
        report = try info(mnt + "/d/f")
        XCTAssertEqual(report["key_cached"] as? Bool, false)
        report = try info(mnt + "/d/f")
        XCTAssertEqual(report["key_cached"] as? Bool, false, "info loaded the key")
        sh("cat \(mnt)/d/f > /dev/null")
        XCTAssertEqual(try info(mnt + "/d/f")["key_cached"] as? Bool, true)

        // After a rotation the file's key is wrapped by version 2.
        XCTAssertTrue(fx.cmkfs(["key", "rotate", vol, "--kms-dir", fx.kms]).succeeded)
        XCTAssertEqual(try info(mnt + "/d/f")["key_version"] as? Int, 2)

        // Text for a person, relative paths too.
        let text = fx.sh("cd \(mnt)/d && \(Shell.quote(MountFixture.binary)) info f").stdout
        XCTAssertTrue(text.contains(fileID) && text.contains("\(keyID) v2"), text)
    }

    func testInfoRefusesWhatIsNotAFileOfAMount() throws {
        let outside = fx.cmkfs(["info", fx.root])
        XCTAssertEqual(outside.status, 11, "\(outside)")
        XCTAssertTrue(outside.stderr.contains("not inside a mounted cmkfs volume"), "\(outside)")
        sh("mkdir \(mnt)/dir")
        let dir = fx.cmkfs(["info", mnt + "/dir"])
        XCTAssertNotEqual(dir.status, 0)
        XCTAssertTrue(dir.stderr.contains("not a regular file"), "\(dir)")
        let missing = fx.cmkfs(["info", mnt + "/nope"])
        XCTAssertTrue(missing.stderr.contains("No such file"), "\(missing)")
    }
}

/// `key revoke` of a key that is disabled already says so, in text and in JSON, and still flushes.
final class RevokeTwiceTests: IntegrationTestCase {
    func testRevokingADisabledKeySaysItWasAlreadyDisabled() throws {
        let first = fx.cmkfs(["key", "revoke", vol, "--kms-dir", fx.kms, "--reason", "drill"])
        XCTAssertTrue(first.succeeded, "\(first)")
        XCTAssertFalse(first.stdout.contains("already disabled"), "\(first)")
        let second = fx.cmkfs(["key", "revoke", vol, "--kms-dir", fx.kms, "--reason", "drill again"])
        XCTAssertTrue(second.succeeded, "\(second)")
        XCTAssertTrue(second.stdout.contains("(already disabled)"), "\(second)")
        let json = fx.cmkfs(["key", "revoke", vol, "--kms-dir", fx.kms, "--json"])
        let report = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any], "\(json)")
        XCTAssertEqual(report["already_disabled"] as? Bool, true)
        XCTAssertTrue(fx.cmkfs(["key", "enable", vol, "--kms-dir", fx.kms]).succeeded)
    }
}
