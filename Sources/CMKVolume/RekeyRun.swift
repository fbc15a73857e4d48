import Foundation
import Glibc
import CMKAudit
import CMKFormat
import CMKSystem

/// How a rekey run reaches each file: itself, on an unmounted volume it holds the mount lock of,
/// or through the live mount (which rekeys under the file's lock). `mount` answers nil on
/// success, else why not; the CLI supplies it (the control socket is the CLI's).
public enum RekeyRoute {
    case offline
    case mount((_ mountPath: String) -> String?)
}

/// What a rekey run did.
public struct RekeyRunReport: Sendable {
    /// Files rekeyed, counting those an interrupted run did before.
    public var rekeyed: Int
    /// Whether this run continued an interrupted one with the same selection.
    public var resumed: Bool
    /// The files that were not rekeyed, in order, with why.
    public var failed: [(path: String, error: String)]
}

/// An unfinished run, `meta['rekey_run']`: the selection and the last file done, so a run started
/// again with the same selection continues after it.
struct RekeyRunCursor: Codable {
    var selection: [String]
    var startedAt: String
    var cursor: String?
    var rekeyed: Int
    enum CodingKeys: String, CodingKey { case selection, startedAt = "started_at", cursor, rekeyed }
    static let metaName = "rekey_run"
}

extension Volume {
    /// Rekeys every regular file under `selection` (mount paths such as "/docs"; empty: the
    /// whole volume), in bytewise order, resuming an interrupted run of the same selection.
    /// Records the run's start and end (durable) and one record per file to `audit`; offline,
    /// first finishes the rekeys a crash interrupted. `progress(done, total)` after each file.
    /// Throws only when the run cannot go on (bad selection, audit failure); files that fail are
    /// in the report.
    public func rekeyFiles(selection: [String], route: RekeyRoute, audit: AuditRecorder,
                           progress: (Int, Int) -> Void = { _, _ in }) throws(CMKError) -> RekeyRunReport {
        if case .offline = route {
            for line in try recoverInterruptedRekeys() { try audit(.command("rekey", detail: line), true) }
        }
        var run = RekeyRunCursor(selection: selection, startedAt: isoNow(), cursor: nil, rekeyed: 0)
        var resumed = false
        if let raw = try? metadata.meta(RekeyRunCursor.metaName), let old = try? JSONDecoder().decode(RekeyRunCursor.self, from: Data(raw)),
           old.selection == selection {
            run = old
            resumed = true
        }
        let files = try rekeyCandidates(selection)
        if encryptsNames {
            try audit(.command("name-key", keyID: config.provider.keyID, keyVersion: try? nameKeyVersion(),
                               detail: "the name key was unwrapped to find the files to rekey"), false)
        }
        // Resuming: only the files after the last one done (the walk is sorted bytewise).
        let todo = files.filter { file in run.cursor.map { Array($0.utf8).lexicographicallyPrecedes(Array(file.utf8)) } ?? true }
        try audit(.command("rekey-run", keyID: activeKey.keyID, keyVersion: activeKey.version,
                           detail: (resumed ? "resumed: \(run.rekeyed) done before, " : "started: ")
                            + "\(todo.count) files to rekey" + (selection.isEmpty ? "" : " under \(selection.joined(separator: " "))")),
                  true)
        var failures: [(path: String, error: String)] = []
        for (i, file) in todo.enumerated() {
            let error: String?
            switch route {
            case .offline: error = rekeyOffline(file, audit: audit)
            case .mount(let viaMount): error = viaMount(file)
            }
            if let error { failures.append((file, error)) } else { run.rekeyed += 1 }
            run.cursor = file
            try? metadata.setMeta(RekeyRunCursor.metaName, Array((try? JSONEncoder().encode(run)) ?? Data()))
            progress(i + 1, todo.count)
        }
        try audit(.command("rekey-run", result: failures.isEmpty ? "ok" : "error",
                           error: failures.isEmpty ? nil : "\(failures.count) files failed: \(failures.prefix(5).map(\.path).joined(separator: ", "))",
                           keyID: activeKey.keyID, keyVersion: activeKey.version,
                           detail: "finished: \(run.rekeyed) files rekeyed"), true)
        try? metadata.deleteMeta(RekeyRunCursor.metaName)
        try? metadata.makeDurable()
        return RekeyRunReport(rekeyed: run.rekeyed, resumed: resumed, failed: failures)
    }

    /// The regular files to rekey, as mount paths ("/a/b"), sorted bytewise, each inode once.
    /// Walks the backing tree and maps each backing path to its mount path (encrypted names).
    func rekeyCandidates(_ selection: [String]) throws(CMKError) -> [String] {
        let roots = selection.isEmpty ? ["/"] : selection
        var seen = Set<[UInt]>()
        var out: [String] = []
        for root in roots {
            guard !root.split(separator: "/").contains("..") else { throw CMKError(.usage, "\(root): '..' is not allowed") }
            let rootBacking = root == "/" ? "" : "/" + (try backingPath(forMountPath: root))
            let backing = dataPath + rootBacking
            guard let st = try? Descriptor.cwd.stat(backing, flags: AT_SYMLINK_NOFOLLOW) else {
                throw CMKError(.usage, "\(root) does not exist in the volume", hint: "name files as the mount shows them, e.g. docs/a.txt")
            }
            let candidates: [String]
            if (st.st_mode & S_IFMT) == S_IFDIR {
                candidates = BackingTree.regularFiles(under: backing, encryptedNames: encryptsNames).map { rootBacking + "/" + $0.path }
            } else if (st.st_mode & S_IFMT) == S_IFREG {
                candidates = [rootBacking]
            } else {
                throw CMKError(.usage, "\(root) is not a regular file or directory")
            }
            for path in candidates {
                guard let s = try? Descriptor.cwd.stat(dataPath + path, flags: AT_SYMLINK_NOFOLLOW),
                      seen.insert([UInt(s.st_dev), UInt(s.st_ino)]).inserted else { continue }
                out.append(try mountPath(forBackingPath: String(path.dropFirst())))
            }
        }
        return out.sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }
    }

    /// Rekeys `path` of this unmounted volume (the caller holds the mount lock); its record goes
    /// to `audit`. Nil on success, else why not.
    func rekeyOffline(_ path: String, audit: AuditRecorder) -> String? {
        let backingPath: String
        do { backingPath = try self.backingPath(forMountPath: path) } catch { return error.message }
        let file: FileDescriptor
        do { file = try FileDescriptor.open(dataPath + "/" + backingPath, O_RDWR | O_NOFOLLOW | O_CLOEXEC) } catch {
            return error.errno.description
        }
        let fd = file.rawValue
        var event = AuditEvent.command("rekey")
        event.path = path
        do {
            let fileID = try ContentFile.readFileID(fd: fd)
            event.fileID = "\(fileID)"
            let (old, oldRef) = try fileKeyAndVersion(fileID)
            let (_, ref) = try rekey(fd: fd, relativePath: backingPath, fileID: fileID, oldKey: old)
            event.keyID = ref.keyID
            event.keyVersion = ref.version
            event.cache = "new"
            event.detail = "re-encrypted under a new data key (was under \(oldRef))"
            try audit(event, false)
            return nil
        } catch {
            let why = (error as? FileKeyError)?.description ?? (error as? CMKError)?.message ?? "\(error)"
            event.result = "error"
            event.error = why
            try? audit(event, false)
            return why
        }
    }
}
