import CMKVolume

/// A mount(8)-style option list (`-o ro,noexec,kms_dir=/etc/cmkfs/kms`), as fstab, `mount -t
/// fuse.cmkfs` and `cmkfs mount -o` give it: generic options for the kernel, cmkfs's own options
/// by name, mount(8)'s and systemd's own options accepted and left alone, and anything else
/// refused by name, so a typo never mounts silently with defaults.
public struct MountOptions: Equatable, Sendable {
    /// Options for the kernel mount (passed to libfuse, which turns them into mount flags).
    public var kernel: [String] = []
    /// cmkfs options by name (`kms_dir`, …), in the order given; a flag option has a nil value.
    public var cmkfs: [(name: String, value: String?)] = []

    public static func == (a: MountOptions, b: MountOptions) -> Bool {
        a.kernel == b.kernel && a.cmkfs.map(\.name) == b.cmkfs.map(\.name) && a.cmkfs.map(\.value) == b.cmkfs.map(\.value)
    }

    /// Generic options the kernel applies to the mount.
    public static let kernelOptions: Set<String> = [
        "ro", "rw", "exec", "noexec", "atime", "noatime", "relatime", "norelatime", "strictatime", "nostrictatime",
        "diratime", "nodiratime", "lazytime", "nolazytime", "sync", "async", "dirsync", "nosuid", "nodev",
    ]
    /// Options that belong to mount(8), fstab or systemd; the mount itself has nothing to do.
    static let ignored: Set<String> = ["defaults", "auto", "noauto", "user", "nouser", "users", "owner", "group",
                                       "_netdev", "nofail", "allow_other", "default_permissions"]
    /// cmkfs options that take a value (the `cmkfs mount` flag with `_` for `-`).
    public static let valued: Set<String> = ["kms_dir", "pin_file", "vault_token_file", "kms_reason", "log_level", "log_to", "cache_idle_ttl",
                                             "cache_max_lifetime", "lease_renew", "cache_capacity", "metrics_textfile", "metrics_interval", "pkcs11_uri",
                                             "fuse_transport"]
    /// cmkfs options that are flags.
    public static let flags: Set<String> = ["writeback_cache", "audit_syslog"]

    /// Parses a comma-separated list (empty items are skipped).
    public static func parse(_ list: String) throws(CMKError) -> MountOptions {
        var out = MountOptions()
        for item in list.split(separator: ",", omittingEmptySubsequences: true).map(String.init) {
            let name = item.split(separator: "=", maxSplits: 1).first.map(String.init) ?? item
            let value = item.contains("=") ? String(item.drop(while: { $0 != "=" }).dropFirst()) : nil
            if kernelOptions.contains(item) {
                out.kernel.append(item)
            } else if item == "suid" || item == "dev" {
                throw CMKError(.usage, "mount option '\(item)' is refused: a cmkfs mount is always nosuid,nodev",
                               hint: "drop '\(item)' from the options")
            } else if ignored.contains(item) || name.hasPrefix("x-") || name == "comment" {
                continue
            } else if valued.contains(name) {
                guard let value, !value.isEmpty else {
                    throw CMKError(.usage, "mount option '\(name)' needs a value", hint: "write it as \(name)=VALUE")
                }
                out.cmkfs.append((name, value))
            } else if flags.contains(item) {
                out.cmkfs.append((item, nil))
            } else {
                throw CMKError(.usage, "unknown mount option '\(item)'",
                               hint: "cmkfs options: \((valued.map { $0 + "=" } + flags).sorted().joined(separator: ", ")); generic: \(kernelOptions.sorted().joined(separator: ", ")), and mount(8)'s own (defaults, _netdev, nofail, x-systemd.*, …)")
            }
        }
        return out
    }
}
