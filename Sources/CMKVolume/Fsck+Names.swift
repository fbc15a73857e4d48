import Foundation
import Glibc
import CMKAudit
import CMKFormat
import CMKMetadata
import CMKSystem

/// fsck's checks of the encrypted-name structures (format 2): every backing directory has its
/// directory id, no `mkdir` was left half done, and every stored long name belongs to an entry.
extension Volume {
    func checkNames(repair: Bool, into report: inout FsckReport, audit: AuditRecorder) throws(CMKError) {
        guard encryptsNames else { return }
        var longNames = Set<[UInt8]>()
        try walkDirectories("", longNames: &longNames, repair: repair, into: &report, audit: audit)
        let stored: [[UInt8]]
        do { stored = try metadata.allLongNameHashes() } catch { throw .metadata(error, volume: path) }
        for hash in stored where !longNames.contains(hash) {
            var problem = FsckProblem(kind: "orphan-long-name", path: nil, fileID: nil,
                                      detail: "meta.db keeps the full encoding of a long name (\(hex(hash).prefix(16))…) that no backing entry uses",
                                      repair: "delete the row", repaired: false)
            if repair {
                do { try metadata.deleteLongName(hash: hash) } catch { throw .metadata(error, volume: path) }
                problem.repaired = true
                try audit(.command("fsck", keyID: activeKey.keyID, detail: "repair: deleted an unused long-name row"), false)
            }
            report.problems.append(problem)
        }
    }

    private func walkDirectories(_ relative: String, longNames: inout Set<[UInt8]>, repair: Bool,
                                 into report: inout FsckReport, audit: AuditRecorder) throws(CMKError) {
        let dir = relative.isEmpty ? dataPath : dataPath + "/" + relative
        let names = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
        if !names.contains(NameCodec.directoryIDFile) {
            report.problems.append(FsckProblem(kind: "missing-dir-id", path: "data/" + relative, fileID: nil,
                                               detail: "the directory has no \(NameCodec.directoryIDFile): the names in it cannot be decrypted (it was made or copied behind the mount's back)",
                                               repair: nil, repaired: false))
        }
        for name in names {
            if name.hasPrefix(".cmkfs-mkdir-") {
                // A mkdir cut short before its rename into place: never visible, never named.
                let child = dir + "/" + name
                let entries = ((try? FileManager.default.contentsOfDirectory(atPath: child)) ?? []).filter { $0 != NameCodec.directoryIDFile }
                var problem = FsckProblem(kind: "orphan-mkdir", path: "data/" + (relative.isEmpty ? name : relative + "/" + name), fileID: nil,
                                          detail: "a directory being made when a crash cut it short (\(entries.count) entries)",
                                          repair: entries.isEmpty ? "remove it" : nil, repaired: false)
                if repair && entries.isEmpty {
                    try? Descriptor.cwd.unlink(child + "/" + NameCodec.directoryIDFile)
                    if (try? Descriptor.cwd.unlink(child, flags: AT_REMOVEDIR)) != nil {
                        problem.repaired = true
                        try audit(.command("fsck", keyID: activeKey.keyID, detail: "repair: removed an unfinished mkdir"), false)
                    }
                }
                report.problems.append(problem)
                continue
            }
            if NameCodec.isInternal(name) { continue }
            if let hash = NameCodec.hash(ofLong: name) { longNames.insert(hash) }
            let rel = relative.isEmpty ? name : relative + "/" + name
            let st = try? Descriptor.cwd.stat(dataPath + "/" + rel, flags: AT_SYMLINK_NOFOLLOW)
            // A long symlink target's encoding is a long_names row too.
            if let st, (st.st_mode & S_IFMT) == S_IFLNK,
               let stored = try? FileManager.default.destinationOfSymbolicLink(atPath: dataPath + "/" + rel),
               let hash = NameCodec.hash(ofLong: stored) {
                longNames.insert(hash)
            }
            if let st, (st.st_mode & S_IFMT) == S_IFDIR {
                try walkDirectories(rel, longNames: &longNames, repair: repair, into: &report, audit: audit)
            }
        }
    }
}
