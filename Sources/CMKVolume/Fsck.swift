import Foundation
import Glibc
import CMKAudit
import CMKCrypto
import CMKFormat
import CMKKeys
import CMKMetadata
import CMKSystem

/// One problem `cmkfs fsck` found, named by path and file id (docs/fsck.md lists the kinds).
public struct FsckProblem: Codable, Sendable, Equatable {
    /// `bad-header`, `no-key-row`, `bad-key-row`, `key-refused`, `key-does-not-unwrap`, `bad-size`,
    /// `bad-block`, `duplicate-file-id`, `orphan-rows`, `orphan-copy`, `pending-rekey`, `bad-name`,
    /// `missing-dir-id`, `orphan-mkdir`, `orphan-long-name`, `audit`, `keystore-in-volume`, `not-checked` (the key
    /// provider was unavailable: nothing is known about the file, and nothing is done to it).
    public var kind: String
    /// The file as the mount shows it ("/a/b"); a backing path ("data/…") when its name does not
    /// decrypt.
    public var path: String?
    public var fileID: String?
    public var block: Int?
    public var detail: String
    /// What `--repair` did (or would do); nil when it cannot be repaired safely.
    public var repair: String?
    public var repaired: Bool

    enum CodingKeys: String, CodingKey { case kind, path, fileID = "file_id", block, detail, repair, repaired }
}

/// What `cmkfs fsck` found and did.
public struct FsckReport: Codable, Sendable {
    public var format = 1
    public var volume: String
    public var filesChecked = 0
    public var blocksChecked = 0
    public var auditRecords = 0
    public var problems: [FsckProblem] = []
    /// Files whose key could not be had because the provider was unavailable (after retries):
    /// not checked, never repaired.
    public var notChecked = 0
    public var repairMode: Bool
    public var seconds = 0.0

    /// Problems that are still there (not repaired).
    public var remaining: Int { problems.filter { !$0.repaired }.count }

    enum CodingKeys: String, CodingKey {
        case format, volume, filesChecked = "files_checked", blocksChecked = "blocks_checked"
        case auditRecords = "audit_records", problems, notChecked = "not_checked", repairMode = "repair", seconds
    }
}

extension Volume {
    /// `VOLUME/lost+found/`: where `fsck --repair` moves backing files nothing can decrypt (never
    /// deleted: the customer may still have the key or a backup of the row). Outside `data/`.
    public var lostFoundPath: String { path + "/lost+found" }

    /// Checks the unmounted volume (the caller holds the mount lock): every backing file has a
    /// valid header and a key row whose EDEK unwraps, every block authenticates and the size is
    /// a valid encrypted size; every key row has a file; no rekey is half done; the audit log
    /// verifies. With `repair`, fixes what is safe: finishes interrupted rekeys, removes stray
    /// copies and rows without a file, and moves files nothing can decrypt to `lost+found/`.
    /// Every repair is an audit record (`fsck`). `checkBlocks: false` skips reading the data.
    public func fsck(repair: Bool, checkBlocks: Bool = true, audit: AuditRecorder,
                     progress: (Int, Int) -> Void = { _, _ in }) throws(CMKError) -> FsckReport {
        let start = Date()
        var report = FsckReport(volume: path, repairMode: repair)
        try checkRekeys(repair: repair, into: &report, audit: audit)

        let files = BackingTree.regularFiles(under: dataPath, encryptedNames: encryptsNames)
        let codec = try nameCodec()
        var seen: [[UInt8]: (path: String, inode: [UInt])] = [:]
        for (i, file) in files.enumerated() {
            progress(i, files.count)
            var relative = file.path
            var display: String
            do { display = try mountPath(forBackingPath: relative, codec: codec) } catch {
                (relative, display) = try badName(relative, fileID: file.fileID, error: error, codec: codec, repair: repair,
                                                  into: &report, audit: audit)
            }
            try checkFile(relative, display: display, fileID: file.fileID, seen: &seen, checkBlocks: checkBlocks,
                          repair: repair, into: &report, audit: audit)
        }
        progress(files.count, files.count)
        try checkOrphanRows(seen: Set(seen.keys), repair: repair, into: &report, audit: audit)
        try checkNames(repair: repair, into: &report, audit: audit)
        checkKeystorePlacement(into: &report)
        checkAudit(into: &report)
        report.seconds = Date().timeIntervalSince(start)
        return report
    }

    private func checkRekeys(repair: Bool, into report: inout FsckReport, audit: AuditRecorder) throws(CMKError) {
        let pending: [String]
        do { pending = try metadata.metaKeys(withPrefix: RekeyJournal.prefix) } catch { throw .metadata(error, volume: path) }
        let copies = ((try? FileManager.default.contentsOfDirectory(atPath: rekeyDirectory)) ?? []).filter { $0.hasSuffix(".tmp") }
        guard !pending.isEmpty || !copies.isEmpty else { return }
        if !repair {
            for key in pending {
                report.problems.append(FsckProblem(kind: "pending-rekey", path: nil, fileID: String(key.dropFirst(RekeyJournal.prefix.count)),
                                                   detail: "a rekey was interrupted after its journal entry: the file may be part old, part new",
                                                   repair: "finish the switch from the journaled copy", repaired: false))
            }
            let journaled = Set(pending.map { String($0.dropFirst(RekeyJournal.prefix.count)) + ".tmp" })
            for name in copies where !journaled.contains(name) {
                report.problems.append(FsckProblem(kind: "orphan-copy", path: nil, fileID: String(name.dropLast(4)),
                                                   detail: "rekey/\(name) is a re-encrypted copy cut short before its switch began",
                                                   repair: "remove it (its file was not changed)", repaired: false))
            }
            return
        }
        for line in try recoverInterruptedRekeys() {
            report.problems.append(FsckProblem(kind: line.hasPrefix("removed") ? "orphan-copy" : "pending-rekey", path: nil, fileID: nil,
                                               detail: line, repair: line, repaired: true))
            try audit(.command("fsck", keyID: activeKey.keyID, detail: "repair: \(line)"), false)
        }
    }

    private func checkFile(_ relative: String, display: String, fileID: FileID?, seen: inout [[UInt8]: (path: String, inode: [UInt])],
                           checkBlocks: Bool, repair: Bool, into report: inout FsckReport, audit: AuditRecorder) throws(CMKError) {
        guard let st = try? Descriptor.cwd.stat(dataPath + "/" + relative, flags: AT_SYMLINK_NOFOLLOW) else { return }
        let inode = [UInt(st.st_dev), UInt(st.st_ino)]
        guard let fileID else {
            report.filesChecked += 1
            try unreadable(relative, display: display, fileID: nil, kind: "bad-header",
                           detail: "the backing file is too short or has no cmkfs header (size \(st.st_size))",
                           repair: repair, into: &report, audit: audit)
            return
        }
        if let other = seen[fileID.bytes] {
            if other.inode != inode {
                report.problems.append(FsckProblem(kind: "duplicate-file-id", path: display, fileID: "\(fileID)",
                                                   detail: "the same file id as \(other.path), but another backing file (a copy made behind the mount's back); both decrypt with one key",
                                                   repair: nil, repaired: false))
            }
            return  // a hard link: checked once
        }
        seen[fileID.bytes] = (display, inode)
        report.filesChecked += 1
        let record: FileKeyRecord?
        do { record = try metadata.fileKey(fileID: fileID.bytes) } catch {
            if case .corrupt = error {
                try unreadable(relative, display: display, fileID: fileID, kind: "bad-key-row", detail: "its key row is damaged: \(error)",
                               repair: repair, into: &report, audit: audit)
                return
            }
            throw .metadata(error, volume: path)
        }
        guard record != nil else {
            try unreadable(relative, display: display, fileID: fileID, kind: "no-key-row", detail: "no EDEK row in meta.db: nothing can decrypt it",
                           repair: repair, into: &report, audit: audit)
            return
        }
        let key: SecretBytes
        do { key = try fileKey(fileID) } catch {
            switch error.providerError {
            case .unavailable?, .corrupt?:
                // An outage (or a provider that cannot read its own storage) says nothing about
                // this file. The caller opened the volume with a RetryPolicy, so the provider was
                // asked again with backoff before this.
                report.notChecked += 1
                report.problems.append(FsckProblem(kind: "not-checked", path: display, fileID: "\(fileID)",
                                                   detail: "not checked, the key provider is unavailable: \(error.description)",
                                                   repair: nil, repaired: false))
            case .keyDisabled?, .keyDestroyed?, .keyNotFound?, .accessDenied?:
                report.problems.append(FsckProblem(kind: "key-refused", path: display, fileID: "\(fileID)",
                                                   detail: "the key provider refuses its master-key version: \(error.description)",
                                                   repair: nil, repaired: false))
            case nil:
                throw CMKError(.io, "\(path): \(error.description)")
            case .unwrapFailed?:
                // Proven bad: the provider answered, and the EDEK does not authenticate.
                try unreadable(relative, display: display, fileID: fileID, kind: "key-does-not-unwrap",
                               detail: "its EDEK does not unwrap (tampered, moved or from another volume): \(error.description)",
                               repair: repair, into: &report, audit: audit)
            }
            return
        }
        let backingSize = Int(st.st_size)
        guard let size = layout.plaintextSize(backingSize: backingSize) else {
            report.problems.append(FsckProblem(kind: "bad-size", path: display, fileID: "\(fileID)",
                                               detail: "backing size \(backingSize) is not a valid encrypted size: a torn last block (crash during a write); the blocks before it read",
                                               repair: nil, repaired: false))
            return
        }
        if checkBlocks { checkBlocksOf(relative, display: display, fileID: fileID, size: size, key: key, into: &report) }
    }

    /// Decrypts every non-hole block; each failure is one problem (the other blocks stay readable).
    private func checkBlocksOf(_ relative: String, display: String, fileID: FileID, size: Int, key: SecretBytes, into report: inout FsckReport) {
        guard let file = try? FileDescriptor.open(dataPath + "/" + relative, O_RDONLY | O_NOFOLLOW | O_CLOEXEC) else { return }
        let content = ContentFile(fd: file.rawValue, fileID: fileID, layout: layout)
        let scratch = ContentScratch(layout: layout)
        let plain = UnsafeMutableRawBufferPointer.allocate(byteCount: layout.blockSize, alignment: 16)
        defer { secureZero(plain); plain.deallocate() }
        let blocks = (size + layout.blockSize - 1) / layout.blockSize
        for index in 0..<blocks {
            report.blocksChecked += 1
            do { _ = try content.read(into: plain, at: index * layout.blockSize, size: size, key: key, scratch: scratch) } catch {
                report.problems.append(FsckProblem(kind: "bad-block", path: display, fileID: "\(fileID)", block: index,
                                                   detail: "block \(index) does not authenticate: \(error) (reads of it give EIO; the other blocks read)",
                                                   repair: nil, repaired: false))
            }
        }
    }

    /// A file nothing can decrypt: reported, and with `repair` moved to `lost+found/`.
    private func unreadable(_ relative: String, display: String, fileID: FileID?, kind: String, detail: String, repair: Bool,
                            into report: inout FsckReport, audit: AuditRecorder) throws(CMKError) {
        let target = "lost+found/" + (fileID.map { "\($0)-" } ?? "") + relative.replacingOccurrences(of: "/", with: "%")
        var problem = FsckProblem(kind: kind, path: display, fileID: fileID.map { "\($0)" }, detail: detail,
                                  repair: "move it to VOLUME/\(target) (kept, not deleted)", repaired: false)
        if repair {
            try? Descriptor.cwd.mkdir(lostFoundPath, mode: 0o700)
            let failed: SystemError?
            do { try Descriptor.cwd.rename(dataPath + "/" + relative, to: path + "/" + target, in: .cwd); failed = nil } catch { failed = error }
            if let failed {
                problem.repair = "could not move it to VOLUME/\(target): \(failed.errno)"
            } else {
                problem.repaired = true
                var event = AuditEvent.command("fsck", keyID: activeKey.keyID, detail: "repair: moved to \(target): \(kind): \(detail)")
                event.path = display
                event.fileID = problem.fileID
                try audit(event, false)
            }
        }
        report.problems.append(problem)
    }

    /// A backing file whose name does not decrypt (tampered, or put there behind the mount's
    /// back): the mount cannot show it. With `repair`, renamed to `recovered-<file id>` in the
    /// same directory, which the mount then shows (its content is untouched). Returns the path
    /// to go on checking it under.
    private func badName(_ relative: String, fileID: FileID?, error: CMKError, codec: NameCodec?, repair: Bool,
                         into report: inout FsckReport, audit: AuditRecorder) throws(CMKError) -> (String, String) {
        var problem = FsckProblem(kind: "bad-name", path: "data/" + relative, fileID: fileID.map { "\($0)" },
                                  detail: "its name does not decrypt, so the mount cannot show it: \(error.message)",
                                  repair: "rename it to recovered-<file id> in its directory", repaired: false)
        defer { report.problems.append(problem) }
        let parts = relative.split(separator: "/").map(String.init)
        let parent = parts.dropLast().joined(separator: "/")
        guard repair, let codec, let fileID,
              let parentMount = try? mountPath(forBackingPath: parent, codec: codec) else { return (relative, "data/" + relative) }
        let name = "recovered-\(fileID)"
        do {
            let dir = parent.isEmpty ? dataPath : dataPath + "/" + parent
            let id = try directoryID(at: dir, showing: parentMount)
            let backingName = try codec.encrypt(name, directoryID: id).backingName
            let target = parent.isEmpty ? backingName : parent + "/" + backingName
            guard moveWithoutReplacing(dataPath + "/" + relative, dataPath + "/" + target) else {
                problem.repair = "could not rename it: \(String(cString: strerror(errno)))"
                return (relative, "data/" + relative)
            }
            // The operator asked for this name: bind the file to it, or the mount refuses it (EIO).
            if let tag = try? codec.linkTag(fileID: fileID.bytes, directoryID: id, backingName: backingName) {
                try? metadata.changeLinks(add: [(fileID.bytes, tag)])
            }
            let shown = (parentMount == "/" ? "" : parentMount) + "/" + name
            problem.repaired = true
            problem.repair = "renamed to \(shown)"
            var event = AuditEvent.command("fsck", keyID: activeKey.keyID, detail: "repair: a name that did not decrypt renamed to \(shown)")
            event.path = shown
            event.fileID = "\(fileID)"
            try audit(event, false)
            return (target, shown)
        } catch let error as CMKError { throw error } catch {
            problem.repair = "could not rename it: \(error)"
            return (relative, "data/" + relative)
        }
    }

    /// Key rows whose file is gone (a crash between a create's row and its header, or an unlink
    /// cut short): removed on repair.
    private func checkOrphanRows(seen: Set<[UInt8]>, repair: Bool, into report: inout FsckReport, audit: AuditRecorder) throws(CMKError) {
        let ids: [[UInt8]]
        do { ids = try metadata.allFileIds() } catch { throw .metadata(error, volume: path) }
        for id in ids where !seen.contains(id) {
            let saved = "lost+found/\(hex(id)).rows.json"
            var problem = FsckProblem(kind: "orphan-rows", path: nil, fileID: hex(id),
                                      detail: "meta.db has rows (key, xattrs) for a file id no backing file carries (its file is gone, or its header was destroyed)",
                                      repair: "save the rows (still wrapped) to VOLUME/\(saved) and delete them", repaired: false)
            if repair {
                do {
                    // Kept, not lost: they are the only key to a file whose header was destroyed.
                    let rows = try metadata.rows(fileID: id)
                    try? Descriptor.cwd.mkdir(lostFoundPath, mode: 0o700)
                    let data = try JSONEncoder().encode(rows)
                    guard FileManager.default.createFile(atPath: path + "/" + saved, contents: data, attributes: [.posixPermissions: 0o600]) else {
                        throw CMKError(.io, "cannot write \(path)/\(saved)")
                    }
                    try metadata.deleteFile(fileID: id)
                } catch let error as MetadataError { throw .metadata(error, volume: path) } catch let error as CMKError { throw error } catch {
                    throw CMKError(.internalError, "\(error)")
                }
                problem.repaired = true
                var event = AuditEvent.command("fsck", keyID: activeKey.keyID, detail: "repair: deleted the orphan rows of a missing file")
                event.fileID = hex(id)
                try audit(event, false)
            }
            report.problems.append(problem)
        }
        if repair { do { try metadata.makeDurable() } catch { throw .metadata(error, volume: path) } }
    }

    private func checkAudit(into report: inout FsckReport) {
        do {
            let key = try auditKey()
            let checkpoint = try auditCheckpoint()
            let result = try AuditVerifier.verify(segments: AuditSegments.list(auditPath).map(\.path), key: key,
                                                  checkpoint: checkpoint, allowMissingHead: false)
            report.auditRecords = result.records
            if let problem = result.problem {
                report.problems.append(FsckProblem(kind: "audit", path: nil, fileID: nil,
                                                   detail: "the audit log is not intact: \(problem)",
                                                   repair: nil, repaired: false))
            }
        } catch let error as CMKError where error.code == .keyUnavailable {
            // The audit key did not unwrap because of the provider: nothing is known about the log.
            report.problems.append(FsckProblem(kind: "not-checked", path: nil, fileID: nil,
                                               detail: "the audit log was not verified, the key provider is unavailable: \(error)",
                                               repair: nil, repaired: false))
        } catch {
            report.problems.append(FsckProblem(kind: "audit", path: nil, fileID: nil, detail: "cannot verify the audit log: \(error)",
                                               repair: nil, repaired: false))
        }
    }
}

extension Volume {
    /// A master key stored inside the volume it protects: the embedded keystore in use, or any
    /// keystore file (`*.key` starting with `CMKK`, e.g. a `cmkfs-kms --state` directory) found
    /// outside `data/`. Never repaired: moving a keystore is the key owner's decision.
    func checkKeystorePlacement(into report: inout FsckReport) {
        var base: any KeyProvider = provider
        if let retrying = base as? RetryingProvider { base = retrying.base }
        var flagged: [String] = []
        if let kms = base as? SimulatedKMS, KeystorePlacement.isInside(kms.directory, path) {
            flagged.append(kms.directory)
        }
        for file in keystoreFiles(under: path, depth: 0) where !flagged.contains(where: { KeystorePlacement.isInside(file, $0) }) {
            flagged.append(file)
        }
        for place in flagged {
            report.problems.append(FsckProblem(kind: "keystore-in-volume", path: nil, fileID: nil,
                                               detail: "\(place) is a KMS keystore inside the volume it protects: every copy of the volume carries the master key",
                                               repair: nil, repaired: false))
        }
    }

    /// Keystore files under `dir` (not in `data/`, at most 4 levels down, symlinks not followed).
    private func keystoreFiles(under dir: String, depth: Int) -> [String] {
        guard depth < 4, let names = try? FileManager.default.contentsOfDirectory(atPath: dir) else { return [] }
        var found: [String] = []
        for name in names where !(depth == 0 && name == "data") {
            let p = dir + "/" + name
            guard let st = try? Descriptor.cwd.stat(p, flags: AT_SYMLINK_NOFOLLOW) else { continue }
            if (st.st_mode & S_IFMT) == S_IFDIR {
                found += keystoreFiles(under: p, depth: depth + 1)
            } else if (st.st_mode & S_IFMT) == S_IFREG, name.hasSuffix(".key"), st.st_size >= 12 {
                guard let file = try? FileDescriptor.open(p, O_RDONLY | O_NOFOLLOW | O_CLOEXEC) else { continue }
                if (try? file.descriptor.preadFully(count: 4, at: 0)) == Array("CMKK".utf8) { found.append(p) }
            }
        }
        return found
    }
}

/// A move that never replaces an existing entry: link(2) fails with EEXIST where rename(2) would
/// overwrite, and the source is unlinked only once the new name exists (offline, so no race).
private func moveWithoutReplacing(_ from: String, _ to: String) -> Bool {
    guard (try? Descriptor.cwd.link(from, to: to, in: .cwd)) != nil else { return false }
    return (try? Descriptor.cwd.unlink(from)) != nil
}
