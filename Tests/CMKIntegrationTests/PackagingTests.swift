import Foundation
import XCTest

/// What an operator installs: `make install` / `make uninstall`, the systemd units (verified, and
/// their commands run as systemd would run them), the man pages, and the mount(8) helper from
/// the command line and from an fstab line.
///
/// `make install` is given the binaries `swift test` already built (SWIFT_BUILD_DIR), so no
/// release build runs here.
final class PackagingTests: IntegrationTestCase {
    override var mountsInSetUp: Bool { false }

    /// The repository root (this file is Tests/CMKIntegrationTests/PackagingTests.swift).
    static let repo: String = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().path

    /// The directory holding the cmkfs and cmkfs-kms binaries under test.
    static let buildDir: String = URL(fileURLWithPath: MountFixture.binary).deletingLastPathComponent().path

    /// Every file `make install PREFIX=/usr` puts, relative to DESTDIR, with its mode; the same
    /// list as docs/operator-guide.md ("Install") gives for PREFIX=/usr/local.
    static func installedFiles(prefix: String) -> [String: Int] {
        [
            "\(prefix)/bin/cmkfs": 0o755,
            "\(prefix)/bin/cmkfs-kms": 0o755,
            "/sbin/mount.fuse.cmkfs": 0o755,
            "\(prefix)/lib/systemd/system/cmkfs@.service": 0o644,
            "\(prefix)/lib/systemd/system/cmkfs-kms.service": 0o644,
            "\(prefix)/share/man/man1/cmkfs.1": 0o644,
            "\(prefix)/share/man/man1/cmkfs-kms.1": 0o644,
            "\(prefix)/share/man/man8/mount.fuse.cmkfs.8": 0o644,
            "\(prefix)/share/doc/cmkfs/volume.conf.example": 0o644,
            "\(prefix)/share/bash-completion/completions/cmkfs": 0o644,
            "\(prefix)/share/bash-completion/completions/cmkfs-kms": 0o644,
            "\(zshCompletions(prefix: prefix))/_cmkfs": 0o644,
            "\(zshCompletions(prefix: prefix))/_cmkfs-kms": 0o644,
            "\(prefix)/share/fish/vendor_completions.d/cmkfs.fish": 0o644,
            "\(prefix)/share/fish/vendor_completions.d/cmkfs-kms.fish": 0o644,
        ]
    }

    /// Where zsh finds a package's completions: Debian's directory for /usr, else site-functions.
    static func zshCompletions(prefix: String) -> String {
        prefix == "/usr" ? "/usr/share/zsh/vendor-completions" : prefix + "/share/zsh/site-functions"
    }

    /// Runs make in the repository root with `arguments`.
    @discardableResult
    func make(_ arguments: [String], file: StaticString = #filePath, line: UInt = #line) -> ShellResult {
        let r = Shell.run("/usr/bin/make", ["-C", Self.repo] + arguments, timeout: 120, logDir: fx.logs,
                          label: "make " + arguments.joined(separator: " "))
        XCTAssertTrue(r.succeeded, "make failed: \(r)", file: file, line: line)
        return r
    }

    /// Every non-directory under `dir`, relative to it, with its permission bits.
    func files(under dir: String) -> [String: Int] {
        var result: [String: Int] = [:]
        let out = sh("cd \(Shell.quote(dir)) && find . ! -type d -printf '%m %p\\n'")
        for line in out.split(separator: "\n") {
            let parts = line.split(separator: " ", maxSplits: 1)
            guard parts.count == 2, let mode = Int(parts[0], radix: 8) else { continue }
            result[String(parts[1].dropFirst())] = mode
        }
        return result
    }

    // MARK: make install / uninstall

    func testMakeInstallPutsEveryDocumentedFileAndUninstallRemovesThem() throws {
        let dest = fx.root + "/dest"
        let expected = Self.installedFiles(prefix: "/usr")
        make(["install", "DESTDIR=\(dest)", "PREFIX=/usr", "SWIFT_BUILD_DIR=\(Self.buildDir)"])
        XCTAssertEqual(files(under: dest), expected, "make install put other files, or other modes, than documented")

        // The list make itself reports, and the one the operator's guide gives.
        let listed = make(["-s", "installed-files", "PREFIX=/usr"]).stdout.split(separator: "\n").map(String.init)
        XCTAssertEqual(Set(listed), Set(expected.keys))
        let guide = try String(contentsOfFile: Self.repo + "/docs/operator-guide.md", encoding: .utf8)
        for path in Self.installedFiles(prefix: "/usr/local").keys {
            XCTAssertTrue(guide.contains(path), "docs/operator-guide.md does not mention \(path)")
        }

        // The installed pieces point at the installed binaries, and those run.
        XCTAssertTrue(sh("\(dest)/usr/bin/cmkfs --version").contains("0.1.0"))
        XCTAssertTrue(sh("\(dest)/usr/bin/cmkfs-kms --help").contains("serve"))
        let unit = try String(contentsOfFile: dest + "/usr/lib/systemd/system/cmkfs@.service", encoding: .utf8)
        XCTAssertTrue(unit.contains("ExecStart=/usr/bin/cmkfs mount --foreground ${VOLUME} ${MOUNTPOINT}"), unit)
        let kmsUnit = try String(contentsOfFile: dest + "/usr/lib/systemd/system/cmkfs-kms.service", encoding: .utf8)
        XCTAssertTrue(kmsUnit.contains("ExecStart=/usr/bin/cmkfs-kms serve"), kmsUnit)
        let helper = try String(contentsOfFile: dest + "/sbin/mount.fuse.cmkfs", encoding: .utf8)
        XCTAssertTrue(helper.contains("echo /usr/bin/cmkfs"), helper)
        for text in [unit, kmsUnit, helper] { XCTAssertFalse(text.contains("/usr/local/bin"), text) }

        make(["uninstall", "DESTDIR=\(dest)", "PREFIX=/usr"])
        XCTAssertEqual(files(under: dest), [:], "make uninstall left files behind")
        XCTAssertFalse(FileManager.default.fileExists(atPath: dest + "/usr/share/doc/cmkfs"))
        make(["uninstall", "DESTDIR=\(dest)", "PREFIX=/usr"])   // nothing left to remove is fine
    }

    // MARK: shell completions

    /// What bash completes for the command line `words` (the last one being typed) with the
    /// completion script `script`, called the way bash-completion calls it; the installed
    /// binaries are on the PATH (the scripts may call them back).
    func bashCompletes(_ script: String, _ words: [String]) -> [String] {
        let line = words.joined(separator: " ")
        let function = "_" + words[0]
        let r = Shell.run("/bin/bash", ["-c", """
            export PATH="$2:$PATH"; source "$1"
            COMP_WORDS=(\(words.map(Shell.quote).joined(separator: " "))); COMP_CWORD=\(words.count - 1)
            COMP_LINE=\(Shell.quote(line)); COMP_POINT=${#COMP_LINE}
            \(function) \(Shell.quote(words[0])) \(Shell.quote(words.last!)) \(Shell.quote(words[words.count - 2]))
            printf '%s\\n' "${COMPREPLY[@]}"
            """, "bash", script, fx.root + "/dest/usr/bin"], timeout: 30, logDir: fx.logs, label: "bash completion of \(line)")
        XCTAssertTrue(r.succeeded, "\(r)")
        return r.stdout.split(separator: "\n").map(String.init)
    }

    func testMakeInstallPutsShellCompletionsThatComplete() throws {
        let dest = fx.root + "/dest"
        make(["install", "DESTDIR=\(dest)", "PREFIX=/usr", "SWIFT_BUILD_DIR=\(Self.buildDir)"])
        let bash = dest + "/usr/share/bash-completion/completions/"
        XCTAssertTrue(bashCompletes(bash + "cmkfs", ["cmkfs", "re"]).contains("rekey"))
        XCTAssertTrue(bashCompletes(bash + "cmkfs", ["cmkfs", "key", "re"]).contains("revoke"))
        XCTAssertTrue(bashCompletes(bash + "cmkfs", ["cmkfs", "mount", "--read"]).contains("--read-only"))
        XCTAssertTrue(bashCompletes(bash + "cmkfs-kms", ["cmkfs-kms", "se"]).contains("serve"))

        // zsh and fish load theirs without an error, and name the same commands.
        for (shell, file, check) in [
            ("/usr/bin/zsh", dest + Self.zshCompletions(prefix: "/usr") + "/_cmkfs", "-n"),
            ("/usr/bin/fish", dest + "/usr/share/fish/vendor_completions.d/cmkfs.fish", "--no-execute"),
        ] {
            guard FileManager.default.isExecutableFile(atPath: shell) else {
                XCTFail("\(shell) is missing: run scripts/install-deps.sh (Debian packages zsh and fish)")
                continue
            }
            let r = Shell.run(shell, [check, file], timeout: 30, logDir: fx.logs)
            XCTAssertTrue(r.succeeded && r.stderr.isEmpty, "\(shell) does not load \(file): \(r)")
            let text = try String(contentsOfFile: file, encoding: .utf8)
            for command in ["init", "mount", "rekey", "fsck", "read-only"] {
                XCTAssertTrue(text.contains(command), "\(file) does not complete \(command)")
            }
        }
        let fish = Shell.run("/usr/bin/fish", ["-c", "source $argv[1]; complete -C 'cmkfs re'",
                                               dest + "/usr/share/fish/vendor_completions.d/cmkfs.fish"],
                             timeout: 30, logDir: fx.logs)
        XCTAssertTrue(fish.stdout.contains("rekey"), "fish does not complete cmkfs re: \(fish)")
        let fishOption = Shell.run("/usr/bin/fish", ["-c", "source $argv[1]; complete -C 'cmkfs mount --rea'",
                                                     dest + "/usr/share/fish/vendor_completions.d/cmkfs.fish"],
                                   timeout: 30, logDir: fx.logs)
        XCTAssertTrue(fishOption.stdout.hasPrefix("--read-only"), "fish does not complete cmkfs mount --rea: \(fishOption)")
        make(["uninstall", "DESTDIR=\(dest)", "PREFIX=/usr"])
        XCTAssertEqual(files(under: dest), [:], "make uninstall left completions behind")
    }

    // MARK: systemd units

    /// Installs into a private prefix (no DESTDIR), so the units name binaries that exist.
    func installIntoPrivatePrefix() -> String {
        let prefix = fx.root + "/prefix"
        make(["install", "PREFIX=\(prefix)", "SBINDIR=\(prefix)/sbin", "SWIFT_BUILD_DIR=\(Self.buildDir)"])
        return prefix
    }

    func testSystemdUnitsPassSystemdAnalyzeVerify() throws {
        guard let analyze = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"].first(where: FileManager.default.isExecutableFile) else {
            return XCTFail("systemd-analyze is missing: run scripts/install-deps.sh (Debian package systemd)")
        }
        let prefix = installIntoPrivatePrefix()
        let units = prefix + "/lib/systemd/system"
        // An instance of the template, and the KMS; Documentation=man:… is checked against the
        // installed man pages.
        let r = Shell.run("/usr/bin/env", ["MANPATH=\(prefix)/share/man", analyze, "verify",
                                           units + "/cmkfs@test.service", units + "/cmkfs-kms.service"],
                          timeout: 60, logDir: fx.logs, label: "systemd-analyze verify")
        XCTAssertTrue(r.succeeded, "systemd-analyze verify failed: \(r)")
        XCTAssertEqual(r.stderr.trimmingCharacters(in: .whitespacesAndNewlines), "", "systemd-analyze verify warned: \(r)")
        make(["uninstall", "PREFIX=\(prefix)", "SBINDIR=\(prefix)/sbin"])
    }

    /// The value of `key=` in a unit file (the first one).
    func unitSetting(_ unit: String, _ key: String) -> String? {
        unit.split(separator: "\n").first { $0.hasPrefix(key + "=") }.map { String($0.dropFirst(key.count + 1)) }
    }

    /// Runs one Exec line of a unit the way systemd does for these units: `${NAME}` is one word,
    /// `$NAME` splits on spaces, `$$` is a dollar, a leading `-` only ignores the exit status;
    /// the environment file's variables are in the environment.
    func runExec(_ line: String, env: [String: String], timeout: TimeInterval = 90) -> ShellResult {
        var command = line.hasPrefix("-") ? String(line.dropFirst()) : line
        command = command.replacingOccurrences(of: "$$", with: "\u{1}")
        for (name, value) in env {
            command = command.replacingOccurrences(of: "${\(name)}", with: Shell.quote(value))
            command = command.replacingOccurrences(of: "$\(name)", with: value)
        }
        command = command.replacingOccurrences(of: "\u{1}", with: "$")
        let exports = env.map { "\($0.key)=\(Shell.quote($0.value))" }.joined(separator: " ")
        return fx.sh("export \(exports); \(command)", timeout: timeout)
    }

    /// Starts one Exec line in the background as systemd starts a Type=notify main process:
    /// `$NOTIFY_SOCKET` names `notify`. The process is killed at teardown if still running.
    func startExec(_ line: String, env: [String: String], notify: NotifySocket, extraEnv: [String: String] = [:]) -> Process {
        var command = line.replacingOccurrences(of: "$$", with: "\u{1}")
        for (name, value) in env {
            command = command.replacingOccurrences(of: "${\(name)}", with: Shell.quote(value))
            command = command.replacingOccurrences(of: "$\(name)", with: value)
        }
        command = command.replacingOccurrences(of: "\u{1}", with: "$")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", "exec " + command]
        var environment = ProcessInfo.processInfo.environment.merging(env) { $1 }.merging(extraEnv) { $1 }
        environment["NOTIFY_SOCKET"] = notify.path
        process.environment = environment
        process.standardInput = FileHandle(forReadingAtPath: "/dev/null")
        let log = fx.logs + "/exec-start-\(randomHex(4)).log"
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        process.standardOutput = FileHandle(forWritingAtPath: log)
        process.standardError = FileHandle(forWritingAtPath: log)
        XCTAssertNoThrow(try process.run())
        addTeardownBlock { if process.isRunning { kill(process.processIdentifier, SIGKILL); process.waitUntilExit() } }
        return process
    }

    /// Whether the mount at `mnt` answers a stat within four seconds (a mount whose daemon does
    /// not serve yet blocks it; four leaves room for a loaded machine to start `stat`).
    func mountAnswers() -> Bool {
        let r = Shell.run("/usr/bin/stat", ["-f", "-c", "%T", mnt], timeout: 4, logDir: fx.logs, label: "stat -f \(mnt)")
        return r.succeeded && r.stdout.contains("fuse")
    }

    func testTemplateUnitNotifiesReadyOnlyOnceTheMountAnswersAndClearsACrashedMount() throws {
        let prefix = installIntoPrivatePrefix()
        let unit = try String(contentsOfFile: prefix + "/lib/systemd/system/cmkfs@.service", encoding: .utf8)
        XCTAssertEqual(unitSetting(unit, "Type"), "notify")
        XCTAssertEqual(unitSetting(unit, "EnvironmentFile"), "/etc/cmkfs/%i.conf")
        let start = try XCTUnwrap(unitSetting(unit, "ExecStart"))
        let stop = try XCTUnwrap(unitSetting(unit, "ExecStop"))
        let stopPost = try XCTUnwrap(unitSetting(unit, "ExecStopPost"))
        XCTAssertTrue(start.hasPrefix(prefix + "/bin/cmkfs "), start)
        // What /etc/cmkfs/NAME.conf would hold.
        let env = ["VOLUME": vol, "MOUNTPOINT": mnt, "CMKFS_MOUNT_OPTIONS": "--kms-dir \(fx.kms) --lease-renew 1m"]
        let notify = try NotifySocket(path: fx.root + "/notify.sock")

        // The request loop starts 8 s after the kernel mount: READY=1 must wait for it, and
        // the mount must answer at once when READY=1 arrives.
        var daemon = startExec(start, env: env, notify: notify, extraEnv: ["CMKFS_STALL_POINT": "fuse-loop-start:8000"])
        let ready = try XCTUnwrap(notify.receive(until: "READY", deadline: 60), "no READY=1 from the daemon")
        XCTAssertEqual(ready["READY"], "1")
        XCTAssertTrue(mountAnswers(), "READY=1 came before the mount answered")
        XCTAssertEqual(ready["STATUS"], "serving \(vol) at \(mnt)")
        XCTAssertEqual(fx.lockPID(), daemon.processIdentifier, "the main process is not the daemon")
        sh("echo 'mounted by the unit' > \(mnt)/unit.txt && cat \(mnt)/unit.txt")
        // ExecStopPost leaves a live mount alone.
        var r = runExec(stopPost, env: env)
        XCTAssertTrue(fx.isMounted(mnt), "ExecStopPost unmounted a live mount: \(r)")

        // ExecStop unmounts cleanly; the daemon says STOPPING=1 and exits 0.
        r = runExec(stop, env: env)
        XCTAssertTrue(r.succeeded, "ExecStop failed: \(r)")
        XCTAssertFalse(fx.isMounted(mnt))
        XCTAssertEqual(notify.receive(until: "STOPPING", deadline: 60)?["STOPPING"], "1")
        XCTAssertTrue(waitUntil(deadline: 15) { !daemon.isRunning }, "the daemon outlived ExecStop")
        XCTAssertEqual(daemon.terminationStatus, 0)

        // A crashed daemon leaves a stale mount; ExecStopPost clears it and the restart mounts.
        daemon = startExec(start, env: env, notify: notify)
        XCTAssertNotNil(notify.receive(until: "READY", deadline: 60), "no READY=1 after the restart")
        kill(daemon.processIdentifier, SIGKILL)
        waitUntil(deadline: 10) { !daemon.isRunning }
        XCTAssertTrue(fx.isMounted(mnt), "expected the stale mount of the killed daemon")
        r = runExec(stopPost, env: env)
        XCTAssertTrue(r.succeeded, "ExecStopPost failed: \(r)")
        XCTAssertFalse(fx.isMounted(mnt), "ExecStopPost left the stale mount")
        daemon = startExec(start, env: env, notify: notify)
        XCTAssertNotNil(notify.receive(until: "READY", deadline: 60), "no READY=1 after the crash")
        XCTAssertEqual(sh("cat \(mnt)/unit.txt"), "mounted by the unit\n")
        XCTAssertTrue(runExec(stop, env: env).succeeded)
        XCTAssertFalse(fx.isMounted(mnt))
        XCTAssertEqual(notify.receive(until: "STOPPING", deadline: 60)?["STOPPING"], "1")
        XCTAssertTrue(waitUntil(deadline: 15) { !daemon.isRunning })

        // A refused mount tells systemd why before it exits (exit 3: not a volume).
        let missing = env.merging(["VOLUME": fx.root + "/missing-vol"]) { $1 }
        daemon = startExec(start, env: missing, notify: notify)
        XCTAssertTrue(notify.receive(until: "STATUS", deadline: 30)?["STATUS"]?.hasPrefix("opening ") == true)
        let refused = notify.receive(until: "STATUS", deadline: 30)
        XCTAssertTrue(refused?["STATUS"]?.hasPrefix("mount refused: ") == true, "\(String(describing: refused))")
        XCTAssertNil(refused?["READY"])
        XCTAssertTrue(waitUntil(deadline: 30) { !daemon.isRunning })
        XCTAssertEqual(daemon.terminationStatus, 3)
        make(["uninstall", "PREFIX=\(prefix)", "SBINDIR=\(prefix)/sbin"])
    }

    // MARK: man pages

    /// The subcommand paths of a binary (`["init"], ["cache", "stats"], …`) from its --help.
    func subcommands(_ binary: String, _ path: [String] = []) -> [[String]] {
        let help = sh(([binary] + path + ["--help"]).map(Shell.quote).joined(separator: " "))
        guard let section = help.components(separatedBy: "SUBCOMMANDS:\n").dropFirst().first else { return [path] }
        var result: [[String]] = []
        for line in section.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.isEmpty { break }
            let words = line.split(separator: " ")
            guard line.hasPrefix("  "), !line.hasPrefix("   "), let name = words.first else { continue }
            result += subcommands(binary, path + [String(name)])
        }
        return path.isEmpty ? result : [path] + result
    }

    func testManPagesRenderWithoutWarningsAndCoverEveryOption() throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/groff") else {
            return XCTFail("groff is missing: run scripts/install-deps.sh (Debian package groff-base)")
        }
        let pages = ["man/cmkfs.1", "man/cmkfs-kms.1", "man/mount.fuse.cmkfs.8"]
        for page in pages {
            let r = Shell.run("/usr/bin/env", ["LC_ALL=C.UTF-8", "/usr/bin/groff", "-man", "-Tutf8", "-ww", "-z", Self.repo + "/" + page],
                              timeout: 60, logDir: fx.logs, label: "groff \(page)")
            XCTAssertTrue(r.succeeded && r.stderr.isEmpty, "\(page) does not render cleanly: \(r)")
            if FileManager.default.isExecutableFile(atPath: "/usr/bin/mandoc") {
                let lint = Shell.run("/usr/bin/mandoc", ["-Tlint", "-Wwarning", Self.repo + "/" + page], timeout: 60, logDir: fx.logs)
                XCTAssertTrue(lint.succeeded, "mandoc -Tlint \(page): \(lint)")
            }
        }

        // Every subcommand and every option that --help shows is in the page.
        let kms = Self.buildDir + "/cmkfs-kms"
        for (binary, page) in [(MountFixture.binary, "man/cmkfs.1"), (kms, "man/cmkfs-kms.1")] {
            let text = try String(contentsOfFile: Self.repo + "/" + page, encoding: .utf8)
                .replacingOccurrences(of: "\\-", with: "-")
            for path in subcommands(binary) {
                XCTAssertTrue(text.contains(path.last!), "\(page) does not mention the subcommand \(path.joined(separator: " "))")
                // From USAGE on: the options themselves, not the examples in the discussion above
                // (an example may use another command's options).
                let full = sh(([binary] + path + ["--help"]).map(Shell.quote).joined(separator: " "))
                let help = full.components(separatedBy: "USAGE:").dropFirst().joined(separator: "USAGE:")
                XCTAssertFalse(help.isEmpty, "no USAGE: in \(path) --help")
                let options = Set(help.matches(of: /--[a-z][a-z0-9-]*/).map { String($0.output) })
                    .subtracting(["--help", "--version"])
                for option in options.sorted() {
                    XCTAssertTrue(text.contains(option), "\(page) does not document \(path.joined(separator: " ")) \(option)")
                }
            }
        }
        let helper = try String(contentsOfFile: Self.repo + "/man/mount.fuse.cmkfs.8", encoding: .utf8)
        XCTAssertTrue(helper.contains("kms_dir="), "mount.fuse.cmkfs.8 does not document kms_dir=")
    }

    // MARK: mount(8) and fstab

    /// Makes /sbin/mount.fuse.cmkfs the repository's helper for the test, then puts back what
    /// was there (nothing, or the previous file with its mode).
    func installMountHelper() throws {
        let target = "/sbin/mount.fuse.cmkfs"
        let fm = FileManager.default
        let source = try Data(contentsOf: URL(fileURLWithPath: Self.repo + "/mount-helpers/mount.cmkfs"))
        let previous = fm.contents(atPath: target)
        let previousMode = (try? fm.attributesOfItem(atPath: target)[.posixPermissions] as? Int) ?? nil
        if previous == source && previousMode == 0o755 { return }
        let staged = target + ".cmkfs-test-\(randomHex(6))"
        XCTAssertTrue(fm.createFile(atPath: staged, contents: source, attributes: [.posixPermissions: 0o755]))
        XCTAssertEqual(rename(staged, target), 0, "cannot install \(target)")
        addTeardownBlock {
            if let previous {
                _ = fm.createFile(atPath: staged, contents: previous, attributes: [.posixPermissions: previousMode ?? 0o755])
                _ = rename(staged, target)
            } else {
                try? fm.removeItem(atPath: target)
            }
        }
    }

    /// Waits until `pid` no longer serves the volume (umount(8) does not wait for the daemon).
    func waitForDaemonExit(_ pid: pid_t?, file: StaticString = #filePath, line: UInt = #line) {
        guard let pid else { return }
        waitUntil(deadline: 15) { !MountFixture.isCmkfsDaemon(pid, volume: vol) }
        XCTAssertFalse(MountFixture.isCmkfsDaemon(pid, volume: vol), "the daemon \(pid) outlived umount", file: file, line: line)
    }

    func testMountTypeFuseCmkfsAndAnFstabLineWithNofail() throws {
        try installMountHelper()
        // mount(8) passes its environment to the helper: run the cmkfs under test.
        let env = "CMKFS=\(Shell.quote(MountFixture.binary))"

        sh("\(env) mount -t fuse.cmkfs -o kms_dir=\(fx.kms) \(vol) \(mnt)")
        XCTAssertEqual(MountFixture.mountType(mnt), "fuse.cmkfs")
        sh("echo 'through mount -t' > \(mnt)/hello.txt")
        XCTAssertEqual(sh("cat \(mnt)/hello.txt"), "through mount -t\n")
        var pid = fx.lockPID()
        sh("umount \(mnt)")
        XCTAssertFalse(fx.isMounted(mnt))
        waitForDaemonExit(pid)

        // The fstab line the operator's guide recommends, from a private fstab.
        let fstab = fx.root + "/fstab"
        let entry = "\(vol)  \(mnt)  fuse.cmkfs  defaults,nofail,_netdev,x-systemd.requires=cmkfs-kms.service,kms_dir=\(fx.kms)  0  0\n"
        try entry.write(toFile: fstab, atomically: true, encoding: .utf8)
        sh("\(env) mount --fstab \(fstab) \(mnt)")
        XCTAssertEqual(MountFixture.mountType(mnt), "fuse.cmkfs")
        XCTAssertEqual(sh("cat \(mnt)/hello.txt"), "through mount -t\n")
        sh("echo 'through fstab' >> \(mnt)/hello.txt")
        pid = fx.lockPID()
        sh("umount \(mnt)")
        XCTAssertFalse(fx.isMounted(mnt))
        waitForDaemonExit(pid)

        // A line for a volume that is not there fails that mount with cmkfs's exit code.
        let missing = fx.root + "/missing-vol"
        try "\(missing)  \(mnt)  fuse.cmkfs  nofail,kms_dir=\(fx.kms)  0  0\n".write(toFile: fstab, atomically: true, encoding: .utf8)
        let r = shFails("\(env) mount --fstab \(fstab) \(mnt)")
        XCTAssertEqual(r.status, 3, "expected cmkfs's 'not a volume': \(r)")
        XCTAssertFalse(fx.isMounted(mnt))
    }
}
