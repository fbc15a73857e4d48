import Glibc
import Foundation
import Logging
import CMKAudit
import CMKFormat
import CMKMetadata
import CMKSystem
import CMKVolume

/// One directory entry of a regular file: its directory's id and its backing name.
struct EntryLink: Equatable, Sendable {
    var directoryID: [UInt8]
    var backingName: String
}

/// A binding an open has to check, offered to the key's read: on a key miss the binding row is
/// read in the same metadata statement as the EDEK (`answer`), and `checkBinding` uses that
/// answer instead of a statement of its own.
struct BindingProbe {
    /// The entry the kernel reached the inode by, when the probe was made.
    let link: EntryLink
    /// The binding tag of a file id at `link` (nil: no name key).
    let tag: (FileID) -> [UInt8]?
    /// Whether the file id read had the binding, when the key's read asked.
    var answer: (fileID: FileID, bound: Bool)?
}

/// Name bindings (encrypted-name volumes): every directory entry of a regular file has a row
/// in meta.db tagged with a MAC of (file id, directory id, backing name) under a key derived from
/// the name key (`NameCodec.linkTag`). An open checks the row of the entry the kernel reached the
/// file by, so a backing file swapped with another, or copied or moved under another name behind
/// the mount's back, reads as EIO instead of as the other file. The volume's root cannot make a
/// row without the name key. What remains possible (putting back an older copy of the same file
/// under the same name, rolling back data and meta.db together) is in docs/threat-model.md.
///
/// Rows are added before an entry appears (create, link, the target of a rename) and removed
/// after it is gone, so a crash leaves at most a stale row, never an entry without its row.
extension FileSystem {
    /// meta.db's marker that every file of the volume has its bindings (set by `backfillBindings`).
    static let bindingsMeta = "name_bindings"

    /// Whether opens check bindings: on every encrypted-name volume (the mount binds the files
    /// of an older volume before it serves).
    var bindsNames: Bool { names != nil }

    /// The entry `name` of `dir`, when names are encrypted (bindings exist only then).
    func entryLink(_ dir: Node, _ name: String) -> EntryLink? {
        guard let names, let id = try? names.directoryID(dir) else { return nil }
        return EntryLink(directoryID: id, backingName: name)
    }

    /// The binding tag of `file` at `link`.
    func bindingTag(_ fileID: FileID, _ link: EntryLink) -> [UInt8]? {
        guard let names, let codec = try? names.codec() else { return nil }
        return try? codec.linkTag(fileID: fileID.bytes, directoryID: link.directoryID, backingName: link.backingName)
    }

    /// Remembers that the kernel reached `inode` through `link` (a lookup or a new entry).
    /// `verified`: the caller committed the binding row of `link` itself (a create), so an open
    /// through it need not read the row back.
    func noteEntry(_ inode: Inode, _ link: EntryLink?, verified: Bool = false) {
        guard let link, inode.kind == S_IFREG else { return }
        inode.noteEntry(link, verified: verified)
    }

    /// The binding an open of `inode` has to check, for the key's read to answer (nil: none
    /// to check, or no entry known, which `checkBinding` handles on its own).
    func bindingProbe(_ inode: Inode) -> BindingProbe? {
        guard bindsNames else { return nil }
        let state = inode.entry
        guard let seen = state.seen, !state.verified else { return nil }
        return BindingProbe(link: seen, tag: { [self] id in bindingTag(id, seen) })
    }

    /// Returns when `fileID`, found behind `inode`, is bound to the entry the kernel reached it
    /// by; throws (logged) when it is not. Checked once per inode and entry. `probe`: the
    /// answer the key's read gave, used when it is about this file id and this entry.
    func checkBinding(_ inode: Inode, _ fileID: FileID, probe: BindingProbe? = nil) throws(FSError) {
        guard bindsNames else { return }
        let state = inode.entry
        if state.seen != nil, state.verified { return }
        if let probe, let answer = probe.answer, answer.fileID == fileID, let seen = state.seen, probe.link == seen {
            try bindingChecked(inode, fileID, bound: answer.bound, seen: seen)
            return
        }
        var tag: [UInt8]?
        if let seen = state.seen {
            tag = bindingTag(fileID, seen)
            guard tag != nil else { throw .corrupt("file \(fileID): no name key to check its binding") }
        }
        let bound: Bool
        do throws(MetadataError) {
            if let tag {
                bound = try volume.metadata.hasLink(fileID: fileID.bytes, tag: tag)
            } else {
                // No entry known (the name it came through was unlinked since): any binding.
                bound = try volume.metadata.hasAnyLink(fileID: fileID.bytes)
            }
        } catch {
            Self.logger.error("file \(fileID): cannot read its name bindings: \(error)")
            throw .metadata(error)
        }
        try bindingChecked(inode, fileID, bound: bound, seen: state.seen)
    }

    /// Refuses (logged) a file found not bound, else notes `seen` as checked.
    private func bindingChecked(_ inode: Inode, _ fileID: FileID, bound: Bool, seen: EntryLink?) throws(FSError) {
        guard bound else {
            Self.logger.error("file \(fileID) is not bound to the name it was opened by: its backing file was moved, copied or swapped there behind the mount's back")
            throw .corrupt("file \(fileID) is not bound to the name it was opened by")
        }
        inode.entryVerified(seen)
    }

    /// The file id in the header of the regular file `name` in `dir`, and whether this is its last link.
    /// `st`: the entry's attributes when the caller has them already.
    func regularFileID(_ dir: Node, _ name: String, st known: stat? = nil) -> (id: FileID, last: Bool)? {
        guard let st = known ?? lstat(dir, name), (st.st_mode & S_IFMT) == S_IFREG else { return nil }
        if let id = knownFileID(dir, name, st: st) { return (id, st.st_nlink == 1) }
        guard let fd = try? dir.descriptor.openat(name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | OpenFlags.noAccessTime) else { return nil }
        return (try? ContentFile.readFileID(fd: fd.rawValue)).map { ($0, st.st_nlink == 1) }
    }

    /// Binding rows for `links` (file, entry); failures are logged, and leave the entry unbound
    /// (EIO on open), never a row for a wrong entry.
    func changeBindings(add: [(FileID, EntryLink)], remove: [(FileID, EntryLink)] = []) throws(FSError) {
        guard bindsNames, !(add.isEmpty && remove.isEmpty) else { return }
        func rows(_ links: [(FileID, EntryLink)]) -> [(fileID: [UInt8], tag: [UInt8])]? {
            var out: [(fileID: [UInt8], tag: [UInt8])] = []
            for (id, link) in links {
                guard let tag = bindingTag(id, link) else { return nil }
                out.append((id.bytes, tag))
            }
            return out
        }
        guard let added = rows(add), let removed = rows(remove) else { throw .corrupt("no name key to make binding rows") }
        do { try volume.metadata.changeLinks(add: added, remove: removed) } catch {
            Self.logger.error("cannot update name bindings: \(error)")
            throw .metadata(error)
        }
    }

    /// What a rename changes in bindings: rows to add before it (the moved files at their new
    /// entries), rows to remove after it (their old entries, a replaced file's entry), the
    /// inodes now reached by another entry, and a replaced file that keeps other names. A rename
    /// of a file onto another of its own names changes nothing (POSIX: both names stay).
    func renameBindings(_ dir: Node, _ name: String, src: stat?, _ newDir: Node, _ newName: String, dst: stat?,
                        exchange: Bool) -> RenameBindings {
        var result = RenameBindings()
        guard bindsNames, let src, let from = entryLink(dir, name), let to = entryLink(newDir, newName) else { return result }
        if let dst, dst.st_ino == src.st_ino, dst.st_dev == src.st_dev { return result }
        var add: [(FileID, EntryLink)] = [], remove: [(FileID, EntryLink)] = [], moved: [(InodeIdentity, EntryLink)] = []
        if (src.st_mode & S_IFMT) == S_IFREG, let s = regularFileID(dir, name) {
            add.append((s.id, to)); remove.append((s.id, from)); moved.append((InodeIdentity(src), to))
        }
        if let dst, (dst.st_mode & S_IFMT) == S_IFREG, let d = regularFileID(newDir, newName) {
            if exchange {
                add.append((d.id, from)); remove.append((d.id, to)); moved.append((InodeIdentity(dst), from))
            } else {
                remove.append((d.id, to))
                result.replaced = (InodeIdentity(dst), to)
            }
        }
        (result.add, result.remove, result.moved) = (add, remove, moved)
        return result
    }

    struct RenameBindings {
        var add: [(FileID, EntryLink)] = []
        var remove: [(FileID, EntryLink)] = []
        var moved: [(InodeIdentity, EntryLink)] = []
        var replaced: (InodeIdentity, EntryLink)?
    }

    /// An entry of `identity` is gone: if the kernel last reached the inode through it, the
    /// next open checks for any binding instead (the kernel reaches it by another name now).
    func entryRemoved(_ identity: InodeIdentity, _ link: EntryLink) {
        inodes.inode(for: identity)?.entryRemoved(link)
    }

    /// Gives every regular file of a volume made before bindings its rows, once, before the
    /// mount serves (recorded in meta.db and in the audit log). Whatever the tree holds at that
    /// moment is taken as right: docs/threat-model.md says what that means.
    func backfillBindings() throws(CMKError) {
        guard let names else { return }
        if (try? volume.metadata.meta(Self.bindingsMeta)) != nil { return }
        guard let codec = try? names.codec() else {
            throw CMKError(.keyUnavailable, "cannot unwrap the name key to bind file names")
        }
        var rows: [(fileID: [UInt8], tag: [UInt8])] = []
        var directories = [""]
        while let relative = directories.popLast() {
            let path = relative.isEmpty ? volume.dataPath : volume.dataPath + "/" + relative
            var directoryID: [UInt8]?
            if let dirFD = try? FileDescriptor.open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) {
                directoryID = try? DirectoryID.read(directoryFD: dirFD.rawValue)
            }
            guard let id = directoryID else { continue }
            let listing = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
            for name in listing where !NameCodec.isInternal(name) {
                let child = path + "/" + name
                guard let st = try? Descriptor.cwd.stat(child, flags: AT_SYMLINK_NOFOLLOW) else { continue }
                if (st.st_mode & S_IFMT) == S_IFDIR { directories.append(relative.isEmpty ? name : relative + "/" + name); continue }
                guard (st.st_mode & S_IFMT) == S_IFREG else { continue }
                guard let fd = try? FileDescriptor.open(child, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | OpenFlags.noAccessTime) else { continue }
                let fileID = try? ContentFile.readFileID(fd: fd.rawValue)
                guard let fileID, let tag = try? codec.linkTag(fileID: fileID.bytes, directoryID: id, backingName: name) else { continue }
                rows.append((fileID.bytes, tag))
            }
        }
        do {
            for start in stride(from: 0, to: rows.count, by: 1000) {
                try volume.metadata.changeLinks(add: Array(rows[start..<min(rows.count, start + 1000)]))
            }
            try volume.metadata.setMeta(Self.bindingsMeta, Array("1".utf8))
        } catch { throw CMKError(.io, "cannot store name bindings: \(error)") }
        guard !rows.isEmpty else { return }
        Self.logger.notice("bound \(rows.count) file names (a volume made before name bindings)")
        try? audit?.append(AuditEvent("bind-names", detail: "bound \(rows.count) existing file names to their files"), durable: true)
    }
}
