import Foundation
import XCTest

/// One test's private world: `/tmp/cmkfs-it-<random>/` holding a volume, its KMS keystore, a
/// mountpoint, a plain scratch directory and the command logs, plus the bookkeeping to tear
/// every mount and daemon down again.
///
///     root/vol     the volume (ciphertext tree, meta.db, mount.lock, mount.log)
///     root/kms     the embedded KMS keystore of the volume
///     root/mnt     the plaintext mountpoint
///     root/plain   plain files: reference copies, generated inputs
///     root/logs    stdout/stderr of the commands run
final class MountFixture {
    let root: String
    var vol: String { root + "/vol" }
    var kms: String { root + "/kms" }
    var mnt: String { root + "/mnt" }
    var plain: String { root + "/plain" }
    var logs: String { root + "/logs" }

    /// Every volume made in this fixture (their daemons are killed at cleanup).
    private(set) var volumes: [String] = []

    /// The `cmkfs` binary built beside the test bundle.
    static let binary: String = {
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        return URL(fileURLWithPath: exe).deletingLastPathComponent().appendingPathComponent("cmkfs").path
    }()

    init() throws {
        let suffix = UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased().prefix(12)
        root = "/tmp/cmkfs-it-\(suffix)"
        let fm = FileManager.default
        // 0755 all the way down: the permission tests run commands as `nobody` under root/mnt.
        for dir in [root, mnt, plain, logs] {
            try fm.createDirectory(atPath: dir, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o755])
        }
        guard fm.isExecutableFile(atPath: Self.binary) else {
            throw FixtureError("the cmkfs binary is missing at \(Self.binary); `swift test` builds it beside the test bundle")
        }
    }

    // MARK: running things

    /// Runs `script` with /bin/sh -c under a timeout.
    @discardableResult
    func sh(_ script: String, timeout: TimeInterval = 120) -> ShellResult {
        Shell.sh(script, timeout: timeout, logDir: logs)
    }

    /// Runs the cmkfs binary.
    @discardableResult
    func cmkfs(_ arguments: [String], timeout: TimeInterval = 60) -> ShellResult {
        Shell.run(Self.binary, arguments, timeout: timeout, logDir: logs, label: (["cmkfs"] + arguments).joined(separator: " "))
    }

    // MARK: volumes and mounts

    /// `plaintextNames`: `init --plaintext-names` (format 1); names are encrypted by default.
    func initVolume(_ volume: String? = nil, kmsDir: String? = nil, plaintextNames: Bool = false) throws {
        let volume = volume ?? vol
        volumes.append(volume)
        let r = cmkfs(["init", volume, "--kms-dir", kmsDir ?? kms] + (plaintextNames ? ["--plaintext-names"] : []))
        guard r.succeeded else { throw FixtureError("init failed: \(r)") }
    }

    /// A volume the test made another way (unpacked, copied): cleanup stops its daemon too.
    func adoptVolume(_ volume: String) { volumes.append(volume) }

    /// Added to every `mount` this fixture makes (a test case's transport, say).
    var mountArguments: [String] = []

    func mount(_ volume: String? = nil, at mountpoint: String? = nil, kmsDir: String? = nil) throws {
        let r = cmkfs(["mount", volume ?? vol, mountpoint ?? mnt, "--kms-dir", kmsDir ?? kms] + mountArguments)
        guard r.succeeded else { throw FixtureError("mount failed: \(r)\nmount.log: \(mountLog(volume ?? vol))") }
        guard isMounted(mountpoint ?? mnt) else { throw FixtureError("mount reported success but \(mountpoint ?? mnt) is not in /proc/self/mounts") }
    }

    func unmount(_ mountpoint: String? = nil) throws {
        let r = cmkfs(["unmount", mountpoint ?? mnt])
        guard r.succeeded else { throw FixtureError("unmount failed: \(r)") }
        guard !isMounted(mountpoint ?? mnt) else { throw FixtureError("\(mountpoint ?? mnt) is still mounted after unmount") }
    }

    func remount() throws {
        try unmount()
        try mount()
    }

    /// The absolute backing path (under `VOLUME/data`) of `mountPath` ("d/f" as the mount shows
    /// it), through `cmkfs debug backing-path`: names are encrypted, so tests that tamper with or
    /// measure a backing file find it this way. Mounted or not; the last component need not exist.
    func backing(_ mountPath: String, volume: String? = nil) throws -> String {
        let r = cmkfs(["debug", "backing-path", volume ?? vol, mountPath, "--kms-dir", kms])
        guard r.succeeded else { throw FixtureError("debug backing-path \(mountPath) failed: \(r)") }
        return r.stdout.trimmingCharacters(in: .newlines)
    }

    /// The mount daemon's pid as `VOLUME/mount.lock` records it.
    func lockPID(_ volume: String? = nil) -> pid_t? {
        guard let text = try? String(contentsOfFile: (volume ?? vol) + "/mount.lock", encoding: .utf8) else { return nil }
        return text.split(separator: "\n").first.flatMap { pid_t($0) }
    }

    func mountLog(_ volume: String? = nil) -> String {
        (try? String(contentsOfFile: (volume ?? vol) + "/mount.log", encoding: .utf8)) ?? "(no mount.log)"
    }

    /// `cmkfs status VOLUME --json`, parsed.
    func status(_ volume: String? = nil, kmsDir: String? = nil) throws -> [String: Any] {
        let r = cmkfs(["status", volume ?? vol, "--kms-dir", kmsDir ?? kms, "--json"])
        // Exit 5 with the report when the key cannot be used (its reason is in key_check_reason).
        guard r.succeeded || r.status == 5 else { throw FixtureError("status failed: \(r)") }
        guard let object = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any] else {
            throw FixtureError("status --json printed no JSON object: \(r.stdout)")
        }
        return object
    }

    func fileCount() throws -> Int {
        guard let n = try status()["file_count"] as? Int else { throw FixtureError("status has no integer file_count") }
        return n
    }

    // MARK: teardown

    /// Unmounts everything under `root`, kills any daemon still alive, removes `root`. Returns
    /// the problems met (empty when all went well); never throws, never waits without a limit.
    func cleanup() -> [String] {
        var problems: [String] = []
        for mountpoint in Self.mounts(under: root).reversed() {
            let r = Shell.run(Self.binary, ["unmount", mountpoint], timeout: 30, logDir: logs)
            if Self.mounts(under: root).contains(mountpoint) {
                problems.append("cmkfs unmount \(mountpoint) failed (\(r.status)): \(r.stderr)")
                Shell.run("/usr/bin/fusermount3", ["-u", "-z", mountpoint], timeout: 30, logDir: logs)
            }
            if Self.mounts(under: root).contains(mountpoint) {
                Shell.run("/bin/umount", ["-l", mountpoint], timeout: 30, logDir: logs)
            }
        }
        for volume in volumes {
            guard let pid = lockPID(volume), Self.isCmkfsDaemon(pid, volume: volume) else { continue }
            // Generous: a daemon still closing its audit log and provider on a loaded machine is
            // slow, not stuck, and a kill here is reported as a test failure.
            waitUntil(deadline: 30) { !Self.isCmkfsDaemon(pid, volume: volume) }
            if Self.isCmkfsDaemon(pid, volume: volume) {
                problems.append("the daemon \(pid) of \(volume) was still alive after unmount; killed it")
                kill(pid, SIGKILL)
                waitUntil(deadline: 10) { !Self.isCmkfsDaemon(pid, volume: volume) }
            }
        }
        let left = Self.mounts(under: root)
        if left.isEmpty {
            // Audit segments are append-only (chattr +a) where the filesystem allows it.
            Shell.run("/usr/bin/chattr", ["-R", "-f", "-a", root], timeout: 60, logDir: logs)
            Shell.run("/bin/rm", ["-rf", root], timeout: 120, logDir: logs)
        } else {
            problems.append("still mounted, so \(root) was left in place: \(left)")
        }
        return problems
    }

    /// Mountpoints at or below `dir`, in mount order.
    static func mounts(under dir: String) -> [String] {
        guard let text = try? String(contentsOfFile: "/proc/self/mounts", encoding: .utf8) else { return [] }
        return text.split(separator: "\n").compactMap { line -> String? in
            let fields = line.split(separator: " ")
            guard fields.count >= 2 else { return nil }
            let point = unescapeMountField(String(fields[1]))
            return point == dir || point.hasPrefix(dir + "/") ? point : nil
        }
    }

    func isMounted(_ mountpoint: String) -> Bool { Self.mounts(under: mountpoint).contains(mountpoint) }

    /// The fuse.cmkfs type of the mount at `mountpoint`, if any.
    static func mountType(_ mountpoint: String) -> String? {
        guard let text = try? String(contentsOfFile: "/proc/self/mounts", encoding: .utf8) else { return nil }
        return text.split(separator: "\n").compactMap { line -> String? in
            let f = line.split(separator: " ")
            return f.count >= 3 && unescapeMountField(String(f[1])) == mountpoint ? String(f[2]) : nil
        }.last
    }

    private static func unescapeMountField(_ s: String) -> String {
        s.replacingOccurrences(of: "\\040", with: " ").replacingOccurrences(of: "\\011", with: "\t")
            .replacingOccurrences(of: "\\012", with: "\n").replacingOccurrences(of: "\\134", with: "\\")
    }

    /// Whether `pid` is a live (not zombie) cmkfs process serving `volume`: a recycled pid is
    /// never killed.
    static func isCmkfsDaemon(_ pid: pid_t, volume: String) -> Bool {
        guard pid > 1, let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8) else { return false }
        if let close = stat.lastIndex(of: ")") {
            let state = stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).prefix(1)
            if state == "Z" || state == "X" { return false }
        }
        guard let cmdline = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return false }
        let args = cmdline.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
        return args.first.map { $0.hasSuffix("cmkfs") } == true && args.contains("mount") && args.contains(volume)
    }

    static func isAlive(_ pid: pid_t) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8) else { return false }
        guard let close = stat.lastIndex(of: ")") else { return true }
        let state = stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).prefix(1)
        return state != "Z" && state != "X"
    }
}

struct FixtureError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
