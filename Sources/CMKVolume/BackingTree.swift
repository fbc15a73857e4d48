import Glibc
import CMKFormat
import CMKSystem

/// Walks a volume's `data/` tree (offline, or beside a live mount) to find the backing files of
/// file ids: purge names the files it makes unreadable, rekey finds what to re-encrypt.
/// Paths are backing paths; `Volume.mountPath(forBackingPath:)` gives what the mount shows.
public enum BackingTree {
    /// Every regular file under `root`, as paths relative to it, sorted bytewise (a stable order
    /// for resumable walks), with the file id in its header (nil: no valid header).
    /// `encryptedNames`: the volume's names are encrypted, so an entry whose name starts with a
    /// dot is cmkfs's own (a directory's id, a directory being made), never a file of the user's;
    /// with plaintext names a dotfile is the user's like any other file (skipping it left its
    /// file out of a rekey and made fsck call its key rows orphans, which `--repair` deletes).
    public static func regularFiles(under root: String, encryptedNames: Bool) -> [(path: String, fileID: FileID?)] {
        var out: [(String, FileID?)] = []
        walk(root, relative: "", encryptedNames: encryptedNames, into: &out)
        return out.sorted { Array($0.0.utf8).lexicographicallyPrecedes(Array($1.0.utf8)) }
    }

    /// Relative paths of the files whose header names one of `ids` (hard links give several).
    public static func paths(of ids: Set<[UInt8]>, under root: String, encryptedNames: Bool) -> [[UInt8]: [String]] {
        var found: [[UInt8]: [String]] = [:]
        for (path, id) in regularFiles(under: root, encryptedNames: encryptedNames) {
            if let id, ids.contains(id.bytes) { found[id.bytes, default: []].append(path) }
        }
        return found
    }

    private static func walk(_ root: String, relative: String, encryptedNames: Bool, into out: inout [(String, FileID?)]) {
        let dirPath = relative.isEmpty ? root : root + "/" + relative
        for name in ((try? DirectoryEntries.of(dirPath)) ?? []).map(\.name) {
            // cmkfs's own entries (a directory's id, a directory being made) are not files.
            if name == "." || name == ".." || (encryptedNames && NameCodec.isInternal(name)) { continue }
            let rel = relative.isEmpty ? name : relative + "/" + name
            guard let st = try? Descriptor.cwd.stat(root + "/" + rel, flags: AT_SYMLINK_NOFOLLOW) else { continue }
            switch st.st_mode & S_IFMT {
            case S_IFDIR: walk(root, relative: rel, encryptedNames: encryptedNames, into: &out)
            case S_IFREG:
                guard let file = try? FileDescriptor.open(root + "/" + rel, O_RDONLY | O_NOFOLLOW | O_CLOEXEC) else { out.append((rel, nil)); continue }
                out.append((rel, try? ContentFile.readFileID(fd: file.rawValue)))
            default: continue
            }
        }
    }
}
