import Glibc
import Synchronization

/// Where an inode was last reached, for the `path` of its audit records: the directory and
/// name the kernel looked it up by, or its whole path inside the mount, as of one generation
/// of the namespace (`AuditNames`).
struct AuditName {
    /// The directory it was reached through; nil when `text` is the whole path. Held strongly:
    /// the kernel forgets a directory only after the entries in it, so this seldom keeps a
    /// directory's inode longer than the kernel does.
    var parent: Inode?
    /// Its name in `parent`, or its whole path inside the mount when `parent` is nil.
    var text: String
    var generation: UInt64

    /// The mark of an unlink (`AuditNames.entryRemoved`): no path (a whole path is never empty).
    var isRemoval: Bool { parent == nil && text.isEmpty }
}

/// The paths of audit records without a readlink and a name decryption per open.
///
/// A lookup notes on the inode it answers the directory and the (plaintext) name it came
/// through; an open's record then joins its directories' names, each directory's whole path
/// being kept on it once joined. A path found the slow way (readlink of the backing descriptor,
/// its names decrypted) is kept on the inode too. Every entry belongs to a generation of the
/// namespace, and each rmdir, rename and link through the mount starts a new one, so an
/// entry from before it is never used: the next open finds the path again the slow way (or the
/// next lookup notes it again). An unlink changes no path but its own object's (it removes no
/// directory, so no other entry was reached through it): it marks that inode alone
/// (`entryRemoved`), and the paths of every other inode stay noted, where a new generation made
/// every open after an `rm` find its path the slow way. Regular files with more than one link are not noted at lookup
/// (the slow way says which of its names the backing filesystem reaches it by, as before).
/// Changes made to the backing directory behind the mount's back are not seen here: such a file
/// is named by the path the kernel reached it through.
///
/// The noted names are plaintext that only the name key reveals from the backing tree, so when
/// the name key leaves the cache (`key revoke`, `cache flush`, a refused renewal, its lease's
/// end) `forgetAll` drops every one of them: none outlives the name key in the daemon.
final class AuditNames: Sendable {
    private let generation = Atomic<UInt64>(1)
    private let root: Inode
    /// Directories joined at most this deep (deeper paths are found the slow way).
    static let maxDepth = 256

    init(root: Inode) { self.root = root }

    /// The current generation: read it before finding a path, and note the path under it.
    var current: UInt64 { generation.load(ordering: .acquiring) }

    /// A name went, moved or was added: every path noted so far may be stale.
    func namespaceChanged() { generation.add(1, ordering: .releasing) }

    /// The name key left the cache: starts a new generation and drops the name noted on each of
    /// `inodes` (every inode the kernel knows), so the strings are freed now rather than when
    /// their inodes are forgotten. A note racing with this stores nothing: it checks the
    /// generation under the inode's lock (`store`), and this takes that lock after the new
    /// generation began. Swift strings cannot be wiped in place; dropping the last reference
    /// frees them. The next open of each file finds its path from the next lookup's note, or
    /// the slow way once the name key is held again.
    func forgetAll(_ inodes: [Inode]) {
        namespaceChanged()
        for inode in inodes { inode.withAuditName { $0 = nil } }
    }

    /// How many inodes of `inodes` hold a noted name now (`cmkfs metrics`, for tests of `forgetAll`).
    func notedCount(_ inodes: [Inode]) -> Int {
        inodes.reduce(0) { count, inode in count + (inode.withAuditName { $0 == nil || $0!.isRemoval } ? 0 : 1) }
    }

    /// `inode` was reached through `name` in `parent` (a lookup begun at `generation`).
    func noteLookup(_ inode: Inode, parent: Inode, name: String, links: UInt, at generation: UInt64) {
        guard inode.kind == S_IFDIR || (inode.kind == S_IFREG && links == 1), name != ".", name != ".." else { return }
        store(inode, AuditName(parent: parent, text: name, generation: generation))
    }

    /// `inode`'s whole path, found at `generation` (never over a note of a later generation).
    func note(_ inode: Inode, path: String, at generation: UInt64) {
        store(inode, AuditName(parent: nil, text: path, generation: generation))
    }

    /// A name of `inode` (not a directory) was unlinked through the mount: its noted path may
    /// be that name. Marks the inode so that no note of this generation is taken for it, neither
    /// one begun before the unlink (which may hold the removed name) nor one after (refused as
    /// well, for want of telling the two apart): its opens find their path the slow way until
    /// the next generation. No other inode's path went through the removed entry.
    func entryRemoved(_ inode: Inode) {
        inode.withAuditName { $0 = AuditName(parent: nil, text: "", generation: current) }
    }

    /// Notes `name` on `inode` unless its generation is over (it could never be used, and after
    /// `forgetAll` it would keep a name the name key no longer guards), a later one is noted, or
    /// the inode lost a name in this generation (`entryRemoved`).
    private func store(_ inode: Inode, _ name: AuditName) {
        inode.withAuditName { entry in
            guard name.generation == current else { return }
            if let entry, entry.generation > name.generation || (entry.isRemoval && entry.generation == name.generation) { return }
            entry = name
        }
    }

    /// `inode`'s path inside the mount from what was noted in `generation`, or nil.
    func path(of inode: Inode, at generation: UInt64) -> String? {
        // The common case, an open of a file whose directory's whole path is kept: one join,
        // without the list of the walk below (its allocation and the retains of its entries
        // were half of this lookup's cost per open).
        guard inode !== root else { return "/" }
        guard let entry = inode.withAuditName({ $0 }), entry.generation == generation, !entry.isRemoval else { return nil }
        guard let parent = entry.parent else { return entry.text }
        if inode.kind != S_IFDIR {
            if parent === root { return "/" + entry.text }
            if let above = parent.withAuditName({ $0 }), above.generation == generation, !above.isRemoval, above.parent == nil {
                return above.text == "/" ? "/" + entry.text : above.text + "/" + entry.text
            }
        }
        return walk(from: inode, at: generation)
    }

    /// `path(of:at:)` by walking up the noted names, keeping each directory's whole path.
    private func walk(from inode: Inode, at generation: UInt64) -> String? {
        var chain: [(inode: Inode, name: String)] = []
        var node = inode
        var base: String?
        for _ in 0..<Self.maxDepth {
            if node === root { base = "/"; break }
            guard let entry = node.withAuditName({ $0 }), entry.generation == generation, !entry.isRemoval else { return nil }
            guard let parent = entry.parent else { base = entry.text; break }
            chain.append((node, entry.text))
            node = parent
        }
        guard var path = base else { return nil }
        for (node, name) in chain.reversed() {
            path = path == "/" ? "/" + name : path + "/" + name
            // A directory keeps its whole path: the files under it then join one name, not a walk.
            if node.kind == S_IFDIR { note(node, path: path, at: generation) }
        }
        return path
    }
}
