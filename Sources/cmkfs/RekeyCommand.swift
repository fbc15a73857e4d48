import ArgumentParser
import Foundation
import Glibc
import CMKAudit
import CMKControl
import CMKFormat
import CMKKeyService
import CMKVolume

/// `cmkfs rekey`: new DEKs and re-encrypted content, for files whose data key may have leaked.
struct RekeyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rekey",
        abstract: "Re-encrypt files under fresh data keys (when a data key may have leaked).",
        discussion: """
        Each file is re-encrypted beside itself and switched in place under a durable journal: a \
        crash leaves the old content or, after the next mount or rekey finishes the journal, the \
        new — never a mix. Mounted, the live mount does the work under the file's lock, so \
        applications with the file open just wait for the switch. Without PATH every file is \
        rekeyed; an interrupted run resumes when started again with the same selection. \
        Example: cmkfs rekey /srv/vol docs/payroll.xlsx
        """
    )
    @Argument(help: "The volume directory.") var volume: String
    @Argument(help: "Files or directories inside the volume, as the mount shows them (default: everything).")
    var paths: [String] = []
    @OptionGroup var access: KeyAccessOptions
    @Flag(help: "Print a JSON summary instead of text (always when stdout is not a terminal).") var json = false

    /// An unfinished run, `meta['rekey_run']`: the selection and the last file done.
    struct Run: Codable {
        var selection: [String]
        var startedAt: String
        var cursor: String?
        var rekeyed: Int
        enum CodingKeys: String, CodingKey { case selection, startedAt = "started_at", cursor, rekeyed }
        static let metaName = "rekey_run"
    }

    struct Summary: Codable {
        /// The version of this JSON shape (docs/json.md).
        var format = 1
        var rekeyed: Int
        var resumed: Bool
        var failed: [Failure]
        var seconds: Double
        struct Failure: Codable { var path: String; var error: String }
    }

    func run() {
        reporting { () throws(CMKError) in
            let start = Date()
            let selection = paths.map { "/" + $0.split(separator: "/").joined(separator: "/") }.sorted()
            let pin = try PINSource.forVolume(volume, pinFile: access.pinFile, promptAtTerminal: true)
            let v = try Volume.open(at: volume, kmsDir: access.kmsDir, pin: pin, purpose: "rekey")
            let mounted = MountLock.holder(volumePath: v.path) != nil
            // Offline, hold the mount lock so no mount starts while files are half switched.
            let lock = mounted ? nil : try MountLock.acquire(v, mountpoint: "(cmkfs rekey, pid \(getpid()))")
            defer { withExtendedLifetime(lock) {} }
            let audit = CommandAudit(path: v.path, direct: !mounted) { () throws(CMKError) in try v.openCommandAuditLog() }
            defer { try? audit.close() }
            if !mounted {
                for line in try v.recoverInterruptedRekeys() {
                    try audit.record(.command("rekey", detail: line), durable: true)
                }
            }
            var run = Run(selection: selection, startedAt: isoNow(), cursor: nil, rekeyed: 0)
            var resumed = false
            if let raw = try? v.metadata.meta(Run.metaName), let old = try? JSONDecoder().decode(Run.self, from: Data(raw)),
               old.selection == selection {
                run = old
                resumed = true
            }
            let files = try Self.select(selection, in: v)
            if v.encryptsNames {
                try audit.record(.command("name-key", keyID: v.config.provider.keyID, keyVersion: try? v.nameKeyVersion(), detail: "the name key was unwrapped to find the files to rekey"),
                                 durable: false)
            }
            // Resuming: only the files after the last one done (the walk is sorted bytewise).
            let todo = files.filter { file in run.cursor.map { Array($0.utf8).lexicographicallyPrecedes(Array(file.utf8)) } ?? true }
            try audit.record(.command("rekey-run", keyID: v.activeKey.keyID, keyVersion: v.activeKey.version,
                                      detail: (resumed ? "resumed: \(run.rekeyed) done before, " : "started: ")
                                        + "\(todo.count) files to rekey" + (selection.isEmpty ? "" : " under \(selection.joined(separator: " "))")),
                             durable: true)
            var bar = ProgressBar("rekeying")
            var failures: [Summary.Failure] = []
            for (i, file) in todo.enumerated() {
                let error: String? = mounted ? Self.rekeyMounted(file, volume: v.path) : Self.rekeyOffline(file, volume: v, audit: audit)
                if let error { failures.append(.init(path: file, error: error)) } else { run.rekeyed += 1 }
                run.cursor = file
                try? v.metadata.setMeta(Run.metaName, Array((try? JSONEncoder().encode(run)) ?? Data()))
                bar.update(i + 1, todo.count)
            }
            try audit.record(.command("rekey-run", result: failures.isEmpty ? "ok" : "error",
                                      error: failures.isEmpty ? nil : "\(failures.count) files failed: \(failures.prefix(5).map(\.path).joined(separator: ", "))",
                                      keyID: v.activeKey.keyID, keyVersion: v.activeKey.version,
                                      detail: "finished: \(run.rekeyed) files rekeyed"), durable: true)
            try? v.metadata.deleteMeta(Run.metaName)
            try? v.metadata.makeDurable()
            let summary = Summary(rekeyed: run.rekeyed, resumed: resumed, failed: failures, seconds: Date().timeIntervalSince(start))
            if json || isatty(1) == 0 {
                printJSON(summary)
            } else {
                print("rekeyed \(summary.rekeyed) files" + (resumed ? " (resumed)" : "") + String(format: " in %.2f s", summary.seconds))
                for f in failures { print("failed: \(f.path): \(f.error)") }
            }
            if !failures.isEmpty {
                throw CMKError(.incomplete, "\(failures.count) files were not rekeyed (first: \(failures[0].path): \(failures[0].error))",
                               hint: "fix the cause (key revoked? tampered block?) and run the same command again")
            }
        }
    }

    /// The regular files to rekey, as mount paths ("/a/b"), sorted bytewise, each inode once.
    /// Walks the backing tree and maps each backing path to its mount path (encrypted names).
    static func select(_ selection: [String], in v: Volume) throws(CMKError) -> [String] {
        let dataPath = v.dataPath
        let roots = selection.isEmpty ? ["/"] : selection
        var seen = Set<[UInt]>()
        var out: [String] = []
        for root in roots {
            guard !root.split(separator: "/").contains("..") else { throw CMKError(.usage, "\(root): '..' is not allowed") }
            let rootBacking = root == "/" ? "" : "/" + (try v.backingPath(forMountPath: root))
            let backing = dataPath + rootBacking
            var st = stat()
            guard lstat(backing, &st) == 0 else {
                throw CMKError(.usage, "\(root) does not exist in the volume", hint: "name files as the mount shows them, e.g. docs/a.txt")
            }
            let candidates: [String]
            if (st.st_mode & S_IFMT) == S_IFDIR {
                candidates = BackingTree.regularFiles(under: backing).map { rootBacking + "/" + $0.path }
            } else if (st.st_mode & S_IFMT) == S_IFREG {
                candidates = [rootBacking]
            } else {
                throw CMKError(.usage, "\(root) is not a regular file or directory")
            }
            for path in candidates {
                var s = stat()
                guard lstat(dataPath + path, &s) == 0, seen.insert([UInt(s.st_dev), UInt(s.st_ino)]).inserted else { continue }
                out.append(try v.mountPath(forBackingPath: String(path.dropFirst())))
            }
        }
        return out.sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }
    }

    /// Asks the live mount to rekey `path`; nil on success, else why not.
    static func rekeyMounted(_ path: String, volume: String) -> String? {
        do {
            _ = try ControlClient.send(.rekey(path: path), volume: volume)
            return nil
        } catch {
            return error.message
        }
    }

    /// Rekeys `path` of the unmounted volume; its record goes to the log.
    static func rekeyOffline(_ path: String, volume v: Volume, audit: CommandAudit) -> String? {
        let backingPath: String
        do { backingPath = try v.backingPath(forMountPath: path) } catch { return error.message }
        let fd = open(v.dataPath + "/" + backingPath, O_RDWR | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else { return String(cString: strerror(errno)) }
        defer { close(fd) }
        var event = AuditEvent.command("rekey")
        event.path = path
        do {
            let fileID = try ContentFile.readFileID(fd: fd)
            event.fileID = "\(fileID)"
            let (old, oldRef) = try v.fileKeyAndVersion(fileID)
            let (_, ref) = try v.rekey(fd: fd, relativePath: backingPath, fileID: fileID, oldKey: old)
            event.keyID = ref.keyID
            event.keyVersion = ref.version
            event.cache = "new"
            event.detail = "re-encrypted under a new data key (was under \(oldRef))"
            try audit.record(event, durable: false)
            return nil
        } catch {
            let why = (error as? FileKeyError)?.description ?? (error as? CMKError)?.message ?? "\(error)"
            event.result = "error"
            event.error = why
            try? audit.record(event, durable: false)
            return why
        }
    }
}
