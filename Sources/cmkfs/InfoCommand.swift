import ArgumentParser
import Foundation
import CMKControl
import CMKVolume

/// `cmkfs info PATH`: one file of a live mount, as the mount knows it.
struct InfoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "info",
        abstract: "Show a file of a live mount: its file id, the master-key version wrapping its key, whether that key is cached, its size on disk.",
        discussion: """
        Asks the mount through its control socket (root or the volume's owner); reads no content and \
        unwraps no key, so it does not warm the cache.

        Example: cmkfs info /mnt/secure/reports/q3.pdf --json
        """
    )

    @Argument(help: "A file inside a mounted cmkfs volume (as the mount shows it).") var path: String
    @Flag(help: "Print JSON (docs/json.md).") var json = false

    /// `cmkfs info --json` (docs/json.md).
    struct Report: Encodable {
        var format = 1
        var path: String
        var volume: String
        var mountpoint: String
        var fileID: String
        var keyID: String?
        var keyVersion: Int?
        var keyCached: Bool
        var backingBytes: Int
        var diskBytes: Int
        enum CodingKeys: String, CodingKey {
            case format, path, volume, mountpoint, fileID = "file_id", keyID = "key_id", keyVersion = "key_version"
            case keyCached = "key_cached", backingBytes = "backing_bytes", diskBytes = "disk_bytes"
        }
    }

    func run() {
        reporting { () throws(CMKError) in
            let full = absolute(path)
            // The innermost cmkfs mount holding the path; its source names the volume.
            guard let mount = MountTable.entries().filter({ $0.type == "fuse.cmkfs" && $0.source.hasPrefix("cmkfs:")
                    && (full == $0.mountpoint || full.hasPrefix($0.mountpoint == "/" ? "/" : $0.mountpoint + "/")) })
                    .max(by: { $0.mountpoint.count < $1.mountpoint.count }) else {
                throw CMKError(.notMounted, "\(full) is not inside a mounted cmkfs volume",
                               hint: "give a path under a cmkfs mountpoint (see: findmnt -t fuse.cmkfs)")
            }
            let volume = String(mount.source.dropFirst("cmkfs:".count))
            let relative = String(full.dropFirst(mount.mountpoint.count))
            let response = try ControlClient.send(.info(path: relative.isEmpty ? "/" : relative), volume: volume)
            guard let info = response.info else { throw CMKError(.io, "the live mount did not describe \(full)") }
            let report = Report(path: full, volume: volume, mountpoint: mount.mountpoint, fileID: info.fileID, keyID: info.keyID,
                                keyVersion: info.keyVersion, keyCached: info.keyCached, backingBytes: info.backingBytes,
                                diskBytes: info.diskBytes)
            if json { printJSON(report); return }
            print(full)
            print("  volume       \(volume) (mounted at \(mount.mountpoint))")
            print("  file id      \(info.fileID)")
            print("  master key   " + (info.keyID.map { "\($0) v\(info.keyVersion ?? 0)" } ?? "(no key row)")
                  + "; data key " + (info.keyCached ? "cached" : "not cached"))
            print("  on disk      \(info.backingBytes) bytes of ciphertext, \(info.diskBytes) bytes allocated")
        }
    }
}
