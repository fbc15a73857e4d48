import Foundation
import XCTest

/// The audit anchor through the real providers (issue 17, item 2): `cmkfs-kms` keeps the latest
/// (seq, head) of each volume, a SoftHSM2 token keeps it as a CKO_DATA object; a log rolled back
/// together with meta.db to an older consistent pair is named by `audit verify`, and a mount on
/// the rolled-back volume chains a gap instead of re-basing.
extension ProviderMountTests {
    /// Saves `audit/` and `meta.db*` of the volume (an older consistent pair), or puts them back.
    func snapshotAuditAndMetadata(to dir: String) {
        sh("chattr -R -a \(pvol)/audit && mkdir -p \(dir) && cp -a \(pvol)/audit \(dir)/ && cp -a \(pvol)/meta.db* \(dir)/")
    }

    func rollBackAuditAndMetadata(from dir: String) {
        sh("chattr -R -a \(pvol)/audit && rm -rf \(pvol)/audit \(pvol)/meta.db* && cp -a \(dir)/audit \(dir)/meta.db* \(pvol)/")
    }

    func checkRollbackIsNamed(place: String, env: [String: String] = [:], access: [String] = []) throws {
        try mountP(env: env, access)
        sh("echo a > \(mnt)/f && cat \(mnt)/f > /dev/null")
        try unmountP()
        let ok = cmkfs(["audit", "verify", pvol] + access, env: env)
        XCTAssertTrue(ok.succeeded && ok.stdout.contains("anchor in \(place)") && ok.stdout.contains(" matches"), "\(ok)")
        snapshotAuditAndMetadata(to: fx.root + "/older")
        try mountP(env: env, access)
        sh("cat \(mnt)/f > /dev/null && cat \(mnt)/f > /dev/null")
        try unmountP()
        rollBackAuditAndMetadata(from: fx.root + "/older")
        let r = cmkfs(["audit", "verify", pvol] + access, env: env)
        XCTAssertEqual(r.status, 12, "\(r)")
        XCTAssertTrue(r.stderr.contains("behind-anchor:") && r.stderr.contains("the anchor in \(place)"), r.stderr)
        // A mount on the rolled-back volume continues from the anchored head and says so.
        try mountP(env: env, access)
        try unmountP()
        let after = cmkfs(["audit", "verify", pvol] + access, env: env)
        XCTAssertEqual(after.status, 12, "\(after)")
        XCTAssertTrue(after.stderr.contains("gap:") && after.stderr.contains("the anchor in \(place)"), after.stderr)
    }

    func testSocketKMSAnchorNamesALogRolledBackWithMetaDB() throws {
        let k = try makeSocketVolume()
        try checkRollbackIsNamed(place: "cmkfs-kms at \(k.socket)")
    }

    func testPKCS11TokenAnchorNamesALogRolledBackWithMetaDB() throws {
        let (_, env, pinFile) = try makeToken()
        XCTAssertTrue(initPKCS11(env, pinFile: pinFile).succeeded)
        try checkRollbackIsNamed(place: "PKCS#11 token 'cmkfs-it' (object cmkfs-audit-anchor.", env: env, access: ["--pin-file", pinFile])
    }
}
