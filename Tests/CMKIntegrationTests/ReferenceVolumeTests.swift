import Foundation
import XCTest

/// Volumes written by earlier cmkfs binaries (Tests/ReferenceVolumes, one per on-disk format and
/// name mode that has shipped, with their test-only keystores) must mount and read exactly as
/// their makers left them, verify their audit log, pass fsck and take new writes. A change that
/// breaks reading an existing volume fails here, which tests that make their volumes with the
/// current binary cannot show.
final class ReferenceVolumeTests: IntegrationTestCase {
    override var mountsInSetUp: Bool { false }

    static let directory: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<2 { url.deleteLastPathComponent() }
        return url.path + "/ReferenceVolumes"
    }()

    static var names: [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [])
            .filter { $0.hasSuffix(".tar.gz") }.map { String($0.dropLast(".tar.gz".count)) }.sorted()
    }

    func testEveryReferenceVolumeMountsAndReadsAsItsMakerLeftIt() throws {
        let names = Self.names
        XCTAssertGreaterThanOrEqual(names.count, 4, "reference volumes in \(Self.directory): \(names)")
        for name in names { try check(name) }
    }

    func check(_ name: String) throws {
        let home = fx.root + "/ref-" + name, vol = home + "/vol", kms = home + "/kms", mnt = home + "/mnt"
        sh("mkdir -p \(mnt) && tar -C \(home) --numeric-owner -xpzf \(Self.directory)/\(name).tar.gz")
        fx.adoptVolume(vol)
        try fx.mount(vol, at: mnt, kmsDir: kms)
        let manifest = sh("sh \(Self.directory)/manifest.sh \(Shell.quote(mnt))")
        let expected = try String(contentsOfFile: "\(Self.directory)/\(name).manifest", encoding: .utf8)
        XCTAssertEqual(manifest, expected, "\(name): the tree differs from what its maker wrote")
        XCTAssertEqual(py("import os, sys; print(os.getxattr(sys.argv[1], 'user.color').decode())", [mnt + "/hello.txt"]),
                       "blue\n", name)
        // It takes new writes of every kind, and keeps them across a remount.
        sh("echo new > \(mnt)/new.txt && ln -s \(String(repeating: "t/", count: 1800)) \(mnt)/new-link && mkdir \(mnt)/newdir && mv \(mnt)/dir/sub \(mnt)/newdir/")
        try fx.unmount(mnt)
        try fx.mount(vol, at: mnt, kmsDir: kms)
        XCTAssertEqual(sh("cat \(mnt)/new.txt \(mnt)/newdir/sub/deep.txt; readlink \(mnt)/new-link | wc -c"), "new\ndeep\n3601\n", name)
        try fx.unmount(mnt)
        let verify = fx.cmkfs(["audit", "verify", vol, "--kms-dir", kms])
        XCTAssertEqual(verify.status, 0, "\(name): audit verify: \(verify)")
        let fsck = fx.cmkfs(["fsck", vol, "--kms-dir", kms])
        XCTAssertEqual(fsck.status, 0, "\(name): fsck: \(fsck)")
        let status = fx.cmkfs(["status", vol, "--kms-dir", kms, "--json"])
        XCTAssertEqual(status.status, 0, "\(name): status: \(status)")
    }
}
