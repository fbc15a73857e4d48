import Glibc
import Foundation
import CFuse3
import CMKVolume

/// Runs a `FileSystem` as a FUSE mount in this process (multithreaded libfuse loop).
public enum FuseMount {
    /// Mounts at `mountpoint`, calls `ready` once the kernel mount exists, serves requests until
    /// the mount is unmounted (or SIGINT/SIGTERM/SIGHUP), then tears down.
    public static func run(_ fileSystem: FileSystem, at mountpoint: String, ready: () -> Void) throws(CMKError) {
        var options = ["fsname=cmkfs:" + escapeOption(fileSystem.volume.path), "subtype=cmkfs", "default_permissions"]
        // As root the mount serves every user (permissions still enforced by the kernel through
        // default_permissions); an unprivileged mount would need user_allow_other in /etc/fuse.conf.
        if geteuid() == 0 { options.append("allow_other") }
        let words: [String] = ["cmkfs", "-o", options.joined(separator: ",")]
        let argv: [UnsafeMutablePointer<CChar>?] = words.map { strdup($0) }
        defer { argv.forEach { free($0) } }
        var cArgv: [UnsafeMutablePointer<CChar>?] = argv + [nil]
        let context = Unmanaged.passRetained(fileSystem)
        defer { context.release() }
        try cArgv.withUnsafeMutableBufferPointer { buffer throws(CMKError) in
            var args = fuse_args(argc: Int32(argv.count), argv: buffer.baseAddress, allocated: 0)
            defer { fuse_opt_free_args(&args) }
            var ops = FuseCallbacks.operations()
            guard let fuse = cmkfs_fuse_new(&args, &ops, context.toOpaque()) else {
                throw CMKError(.mountFailed, "libfuse rejected the mount options")
            }
            defer { fuse_destroy(fuse) }
            guard fuse_mount(fuse, mountpoint) == 0 else {
                throw CMKError(.mountFailed, "the kernel refused to mount \(mountpoint) (see the lines above from libfuse)",
                               hint: "check that /dev/fuse exists and fuse3 is installed, and that you are root")
            }
            defer { fuse_unmount(fuse) }
            let session = fuse_get_session(fuse)
            guard fuse_set_signal_handlers(session) == 0 else {
                throw CMKError(.mountFailed, "cannot install signal handlers")
            }
            defer { fuse_remove_signal_handlers(session) }
            ready()
            let rc = cmkfs_fuse_loop_mt(fuse, 10)
            if rc != 0 && rc != -EINTR {
                FileSystem.log("the FUSE loop ended with error \(rc)")
            }
        }
    }

    /// libfuse splits `-o` values on commas and treats backslash as an escape.
    static func escapeOption(_ value: String) -> String {
        value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: ",", with: "\\,")
    }
}
