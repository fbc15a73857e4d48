import Glibc
import CMKSystem

/// The permission check of a simulated-KMS keystore directory (the embedded KMS's `--kms-dir`,
/// `cmkfs-kms --state`): modes that expose a master key are refused, loose ones that do not are
/// warned about. The keystore's own files are created 0700/0600 whatever the umask; this catches
/// directories and files made or changed by hand.
///
/// Refused: a key file (`*.key`) any other user may read or write (it holds master keys in
/// clear), and a directory other users may write (they could swap key files, or plant a symlink
/// where the next key file is written). Warned: a directory other users may list or enter.
public enum KeystoreModes {
    /// A mode that exposes a key: what is wrong, and the command that fixes it.
    public struct Refusal: Error, CustomStringConvertible {
        public let description: String
        public let fix: String
    }

    /// Checks `directory` (which exists) and its key files; returns warnings for loose modes.
    public static func check(_ directory: String) throws(Refusal) -> [String] {
        guard let st = try? Descriptor.cwd.stat(directory) else { return [] }
        let mode = st.st_mode & 0o7777
        if mode & 0o022 != 0 {
            throw Refusal(description: "the KMS keystore \(directory) is writable by other users (mode \(octal(mode))): they could replace its key files",
                          fix: "chmod 700 \(directory)")
        }
        var warnings: [String] = []
        if mode & 0o055 != 0 {
            warnings.append("the KMS keystore \(directory) is readable by other users (mode \(octal(mode))); make it private: chmod 700 \(directory)")
        }
        // CMKSystem's reader: `d_name` read as a value would copy 256 bytes past a short record.
        guard let entries = try? DirectoryEntries.of(directory) else { return warnings }
        for name in entries.map(\.name) {
            guard name.hasSuffix(".key") else { continue }
            guard let file = try? Descriptor.cwd.stat(directory + "/" + name, flags: AT_SYMLINK_NOFOLLOW), (file.st_mode & S_IFMT) == S_IFREG else { continue }
            let fileMode = file.st_mode & 0o7777
            if fileMode & 0o077 != 0 {
                throw Refusal(description: "the key file \(directory)/\(name) can be read or written by other users (mode \(octal(fileMode))): it holds master keys in clear",
                              fix: "chmod 600 \(directory)/\(name), and treat its keys as exposed")
            }
        }
        return warnings
    }

    static func octal(_ mode: mode_t) -> String {
        let digits = String(mode, radix: 8)
        return String(repeating: "0", count: max(0, 4 - digits.count)) + digits
    }
}

/// Where a keystore may not be: inside a cmkfs volume, where every copy of the volume (a backup,
/// the storage provider) would carry the master key that protects it.
public enum KeystorePlacement {
    /// `path` with symlinks resolved as far as it exists (the rest appended as given).
    public static func resolved(_ path: String) -> String {
        var path = path
        if !path.hasPrefix("/"), let cwd = try? ProcessControls.workingDirectory() {
            path = cwd + "/" + path
        }
        var existing = path
        var rest: [String] = []
        while true {
            if let base = try? ProcessControls.realPath(existing) {
                return rest.isEmpty ? base : (base == "/" ? "" : base) + "/" + rest.reversed().joined(separator: "/")
            }
            guard let slash = existing.lastIndex(of: "/"), existing != "/" else { return path }
            rest.append(String(existing[existing.index(after: slash)...]))
            existing = slash == existing.startIndex ? "/" : String(existing[..<slash])
        }
    }

    /// Whether `path` is `directory` or lies under it, symlinks resolved.
    public static func isInside(_ path: String, _ directory: String) -> Bool {
        let p = resolved(path), d = resolved(directory)
        return p == d || p.hasPrefix(d == "/" ? "/" : d + "/")
    }

    /// The cmkfs volume (a directory holding `cmkfs.volume`) that `path` is in, if any.
    public static func enclosingVolume(of path: String) -> String? {
        var dir = resolved(path)
        while true {
            if (try? Descriptor.cwd.access(dir + "/cmkfs.volume", mode: F_OK)) != nil { return dir }
            guard let slash = dir.lastIndex(of: "/"), dir != "/" else { return nil }
            dir = slash == dir.startIndex ? "/" : String(dir[..<slash])
        }
    }
}
