import Foundation
import XCTest

/// What the mount does per created file (issue 20: untar makes one CREATE per file), counted
/// with strace on the mount's threads.
final class CreateCostTests: IntegrationTestCase {
    /// A create takes the new file's attributes once, right after linking it, for its identity,
    /// its open-file entry and the entry reply. It used to take them three times (the open-file
    /// table re-read the size of a file nobody else could have written yet, and the entry reply
    /// stat'ed the descriptor again). Counted: fstats of a regular file of 24 bytes (a header,
    /// no content) through an fd with only AT_EMPTY_PATH (a setattr's own fstat also has
    /// AT_SYMLINK_NOFOLLOW).
    func testACreateTakesItsNewFilesAttributesOnce() throws {
        sh("mkdir \(mnt)/c")
        let calls = try syscallsTraced("newfstatat") {
            sh("for i in $(seq 1 20); do : > \(mnt)/c/$i; done")
        }
        let newFile = calls.filter { $0.contains("S_IFREG") && $0.contains("st_size=24,") && $0.hasSuffix(", AT_EMPTY_PATH) = 0") }
        XCTAssertEqual(newFile.count, 20, "20 creates stat'ed their new files \(newFile.count) times: \(newFile.prefix(4))")
        XCTAssertEqual(sh("ls \(mnt)/c | wc -l"), "20\n")
        XCTAssertEqual(sh("stat -c '%s %h' \(mnt)/c/7"), "0 1\n", "the entry reply's attributes are the new file's")
    }

    /// tar sets the owner, mode and times of each file through its open descriptor before
    /// closing it: three SETATTRs (the kernel sends no file handle with them). They run on the
    /// open file's own descriptor, so none opens the inode by its handle (and closes it again),
    /// which each did before; the attributes are set all the same.
    func testSetattrsThroughAnOpenFileOpenNothing() throws {
        sh("mkdir \(mnt)/s")
        let tarLike = """
        import os, sys
        for i in range(20):
            fd = os.open(f'{sys.argv[1]}/{i}', os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600)
            os.write(fd, b'x' * 3000)
            os.fchown(fd, 65534, 65534)
            os.fchmod(fd, 0o640)
            os.utime(fd, (1000000000, 1000000000))
            os.close(fd)
        """
        let calls = try syscallsTraced("open_by_handle_at,fchownat,utimensat") {
            let run = python(tarLike, [mnt + "/s"])
            XCTAssertEqual(run.status, 0, "\(run)")
        }
        // A chown or utimens on a descriptor its own thread had just opened by handle (strace
        // 6.1 cannot name fchmodat2, so the chmods are not counted).
        var openedBy: [Substring: String] = [:], onOpened: [Substring] = []
        for line in calls {
            let fields = line.split(separator: " ", maxSplits: 1)
            guard fields.count == 2 else { continue }
            // strace pads thread ids to five columns: a four-digit id leaves a space before the call.
            let (thread, call) = (fields[0], fields[1].drop { $0 == " " })
            if call.hasPrefix("open_by_handle_at("), let fd = call.split(separator: "=").last {
                openedBy[thread] = fd.trimmingCharacters(in: .whitespaces)
            } else if let fd = openedBy[thread], let n = Int(fd),
                      ["fchownat(\(n),", "utimensat(\(n),"].contains(where: call.hasPrefix) {
                onOpened.append(line)
            }
        }
        XCTAssertFalse(calls.isEmpty)
        XCTAssertEqual(onOpened.count, 0, "40 chowns and utimens of open files ran \(onOpened.count) times on a descriptor opened by handle: \(onOpened.prefix(3))")
        XCTAssertEqual(sh("stat -c '%u %g %a %Y %s' \(mnt)/s/7"), "65534 65534 640 1000000000 3000\n")
        try fx.remount()
        XCTAssertEqual(sh("stat -c '%u %g %a %Y %s' \(mnt)/s/7"), "65534 65534 640 1000000000 3000\n")
        XCTAssertEqual(sh("tr -d x < \(mnt)/s/7 | wc -c"), "0\n", "the content is what was written")
    }

    /// The kernel asks cmkfs to drop the set-id bits with every chown of a regular file
    /// (FUSE_HANDLE_KILLPRIV_V2), and tar chowns every file it writes. The setattr stats the
    /// file once, after the chown, for both the check and the reply; it took a second stat for
    /// the check. Counted: fstats with AT_SYMLINK_NOFOLLOW (the setattr's, and a GETATTR's) of
    /// the chowned files (mode 0641, which nothing else here has). The files are opened before
    /// the count starts, so no GETATTR of an open's permission check (attributes older than
    /// the 1 s cache on a slow machine) falls inside it.
    func testAChownOfAnOpenFileStatsItOnce() throws {
        sh("mkdir \(mnt)/o && for i in $(seq 1 20); do echo data > \(mnt)/o/$i; chmod 641 \(mnt)/o/$i; done")
        let chowns = """
        import os, sys, time
        directory, go, ready = sys.argv[1:4]
        fds = [os.open(f'{directory}/{i}', os.O_RDONLY) for i in range(1, 21)]
        open(ready, 'w').close()
        deadline = time.monotonic() + 120
        while not os.path.exists(go) and time.monotonic() < deadline: time.sleep(0.005)
        for fd in fds: os.fchown(fd, 65534, 65534)
        for fd in fds: os.close(fd)
        """
        let go = fx.root + "/chown-go", ready = fx.root + "/chown-ready"
        let holder = Process()
        holder.executableURL = URL(fileURLWithPath: Shell.python)
        holder.arguments = ["-c", chowns, mnt + "/o", go, ready]
        try holder.run()
        defer { if holder.isRunning { holder.terminate(); holder.waitUntilExit() } }
        XCTAssertTrue(waitUntil(deadline: 60) { FileManager.default.fileExists(atPath: ready) }, "the files were not opened")
        let calls = try syscallsTraced("newfstatat") {
            _ = FileManager.default.createFile(atPath: go, contents: nil)
            holder.waitUntilExit()
        }
        XCTAssertEqual(holder.terminationStatus, 0)
        let stats = calls.filter { $0.contains("S_IFREG|0641") && $0.contains("AT_EMPTY_PATH") && $0.contains("AT_SYMLINK_NOFOLLOW") }
        XCTAssertEqual(stats.count, 20, "20 chowns stat'ed their files \(stats.count) times: \(stats.prefix(4))")
        XCTAssertEqual(sh("stat -c '%u %g %a' \(mnt)/o/7"), "65534 65534 641\n")
        sh("chmod 4755 \(mnt)/o/8")
        let run = python("import os, sys\nfd = os.open(sys.argv[1], os.O_RDONLY)\nos.fchown(fd, 0, 0)\nos.close(fd)", [mnt + "/o/8"])
        XCTAssertEqual(run.status, 0, "\(run)")
        XCTAssertEqual(sh("stat -c '%u %a' \(mnt)/o/8"), "0 755\n", "the chown's reply shows the set-id bit gone")
        try fx.remount()
        XCTAssertEqual(sh("stat -c '%u %g %a' \(mnt)/o/7 \(mnt)/o/8"), "65534 65534 641\n0 0 755\n")
    }

    /// ext4 allocates a create's inode in `openat(O_TMPFILE)`, the dearest system call of a
    /// create (an untar after an `rm -rf` pays ext4's scan past recently freed inodes in it).
    /// The mount makes unnamed files ahead, on a queue of its own, and a create links one: no
    /// thread that answers a CREATE links a file it opened itself. The files get the owner,
    /// group and mode of a file made in their own directory (set-group-ID included).
    func testACreateLinksAnUnnamedFileMadeAheadOffTheRequestThread() throws {
        sh("mkdir \(mnt)/c \(mnt)/g && chown :4242 \(mnt)/g && chmod 2777 \(mnt)/g")
        sh(": > \(mnt)/c/first")
        let pid = try XCTUnwrap(fx.lockPID())
        XCTAssertTrue(waitUntil(deadline: 30) { self.unnamedFiles(of: pid) >= 16 },
                      "the mount keeps unnamed files ready: \(unnamedFiles(of: pid))")
        let calls = try syscallsTraced("openat,linkat") {
            sh("for i in $(seq 1 10); do echo $i > \(mnt)/c/$i; done")
            sh("(umask 077; : > \(mnt)/c/private)")
            sh("runuser -u nobody -- sh -c 'umask 022; echo n > \(mnt)/g/n'")
        }
        // Per thread, the descriptor each O_TMPFILE open returned; a link of one of those by the
        // same thread is a create that made its own inode.
        var madeBy: [Substring: Set<String>] = [:]
        var links = 0, ownMade: [Substring] = []
        for line in calls {
            let fields = line.split(separator: " ", maxSplits: 1)
            guard fields.count == 2 else { continue }
            // strace pads thread ids to five columns.
            let (thread, call) = (fields[0], fields[1].drop { $0 == " " })
            if call.hasPrefix("openat("), call.contains("O_TMPFILE"), let fd = call.split(separator: "=").last {
                madeBy[thread, default: []].insert(fd.trimmingCharacters(in: .whitespaces))
            } else if call.hasPrefix("linkat("), call.contains("AT_EMPTY_PATH"), call.hasSuffix("= 0") {
                links += 1
                let fd = String(call.dropFirst("linkat(".count).prefix { $0 != "," })
                if madeBy[thread]?.contains(fd) == true { ownMade.append(line) }
            }
        }
        XCTAssertEqual(links, 12, "12 creates linked their files: \(calls.prefix(6))")
        XCTAssertEqual(ownMade.count, 0, "\(ownMade.count) of 12 creates made their inode on the request thread: \(ownMade.prefix(3))")
        XCTAssertEqual(sh("cat \(mnt)/c/7"), "7\n")
        XCTAssertEqual(sh("stat -c '%u:%g %a %s' \(mnt)/c/7 \(mnt)/c/private \(mnt)/g/n"),
                       "0:0 644 2\n0:0 600 0\n65534:4242 644 2\n")
        XCTAssertEqual(sh("stat -c '%u:%g %a' \(try fx.backing("g/n")) \(try fx.backing("c/private"))"),
                       "65534:4242 644\n0:0 600\n", "the backing files have the owner and mode")
        XCTAssertEqual(sh("runuser -u nobody -- cat \(mnt)/g/n"), "n\n")
        XCTAssertEqual(try fx.fileCount(), 13)
    }

    /// A file linked from the pool has the times of its create, like any new file: its access
    /// time was the moment the pool made it (on an idle mount, hours before the create).
    /// Deterministic: the pool is full (no refill under way) well before the second create, so
    /// a file it made can only be older than `mark`; a file settled at its create is not.
    func testAFileFromThePoolIsAccessedWhenItIsCreatedNotWhenThePoolMadeIt() throws {
        sh("mkdir \(mnt)/t && : > \(mnt)/t/first")
        let pid = try XCTUnwrap(fx.lockPID())
        XCTAssertTrue(waitUntil(deadline: 60) { self.unnamedFiles(of: pid) >= 32 }, "the pool did not fill: \(unnamedFiles(of: pid))")
        // Past the last pooled file's times by far more than the kernel's coarse clock lags.
        let full = Date()
        XCTAssertTrue(waitUntil(deadline: 10) { Date().timeIntervalSince(full) >= 0.5 })
        let mark = Date().timeIntervalSince1970
        let out = python("""
        import os, sys
        fd = os.open(sys.argv[1], os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o644)
        os.close(fd)
        st = os.stat(sys.argv[1])
        print(st.st_atime_ns, st.st_mtime_ns)
        """, [mnt + "/t/second"])
        XCTAssertEqual(out.status, 0, "\(out)")
        let times = out.stdout.split(separator: " ").compactMap { Double($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        XCTAssertEqual(times.count, 2, "\(out)")
        guard times.count == 2 else { return }
        // 0.1 s below `mark`: the kernel's file times come from its coarse clock (a tick behind).
        XCTAssertGreaterThanOrEqual(times[0] / 1e9, mark - 0.1, "the new file's access time is the pool's, \(mark - times[0] / 1e9) s before its create")
        XCTAssertGreaterThanOrEqual(times[1] / 1e9, mark - 0.1)
        XCTAssertEqual(try fx.fileCount(), 2)
    }

    /// tar (as root) creates each file with mode 0600 and sets the archived mode later; a shell
    /// creates with 0644. The unnamed files made ahead take the mode of the last create, so a run
    /// of creates with one mode needs no chmod of its own (a 0644 pool cost tar one per file).
    func testARunOfCreatesWithOneModeNeedsNoChmod() throws {
        sh("mkdir \(mnt)/m")
        let create = """
        import os, sys
        os.umask(0)
        for i in range(int(sys.argv[2]), int(sys.argv[3])):
            os.close(os.open(f'{sys.argv[1]}/{i}', os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600))
        """
        XCTAssertEqual(python(create, [mnt + "/m", "0", "40"]).status, 0)
        let calls = try syscallsTraced("fchmod,fchmodat,linkat") {
            XCTAssertEqual(python(create, [mnt + "/m", "40", "60"]).status, 0)
        }
        let links = calls.filter { $0.contains("linkat(") && $0.hasSuffix("= 0") }
        let chmods = calls.filter { $0.contains("chmod") }
        XCTAssertEqual(links.count, 20, "\(calls.prefix(4))")
        XCTAssertEqual(chmods.count, 0, "20 creates with mode 0600 made \(chmods.count) chmods: \(chmods.prefix(3))")
        XCTAssertEqual(sh("stat -c %a \(mnt)/m/0 \(mnt)/m/59"), "600\n600\n")
        XCTAssertEqual(sh("stat -c %a \(try fx.backing("m/59"))"), "600\n")
    }

    /// A create commits its key rows to meta.db's WAL and syncs nothing. The WAL's checkpoints
    /// (the copy into meta.db, and the start-over whose new header SQLite syncs at the next
    /// commit) run on the group-commit thread: before, every 100 ms the audit checkpoint copied
    /// the WAL under the store's lock and the next create's commit fdatasynced the WAL on its
    /// request thread. 1,500 creates write ~5,000 WAL frames, several checkpoints' worth.
    func testCreatesSyncNothingOnTheRequestThreads() throws {
        sh("mkdir \(mnt)/w")
        let pid = try XCTUnwrap(fx.lockPID())
        let fuseFDs = Set(((try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd")) ?? []).filter {
            (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/\($0)")) == "/dev/fuse"
        })
        XCTAssertFalse(fuseFDs.isEmpty, "the mount has no /dev/fuse descriptor")
        let create = """
        import os, sys
        for i in range(1500):
            os.close(os.open(f'{sys.argv[1]}/{i}', os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600))
        """
        let calls = try syscallsTraced("read,fsync,fdatasync") {
            XCTAssertEqual(python(create, [mnt + "/w"]).status, 0)
            Thread.sleep(forTimeInterval: 0.5)  // a group commit or more after the last create
        }
        var requestThreads = Set<Substring>(), syncs: [(thread: Substring, call: Substring)] = []
        for line in calls {
            let fields = line.split(separator: " ", maxSplits: 1)
            guard fields.count == 2 else { continue }
            let (thread, call) = (fields[0], fields[1].drop { $0 == " " })
            if call.hasPrefix("read("), fuseFDs.contains(String(call.dropFirst(5).prefix { $0 != "," })) {
                requestThreads.insert(thread)
            } else if call.hasPrefix("fsync(") || call.hasPrefix("fdatasync(") {
                syncs.append((thread, call))
            }
        }
        XCTAssertFalse(requestThreads.isEmpty, "no request thread seen: \(calls.prefix(4))")
        let onRequests = syncs.filter { requestThreads.contains($0.thread) }
        XCTAssertEqual(onRequests.count, 0, "1,500 creates synced \(onRequests.count) times on request threads: \(onRequests.prefix(3))")
        XCTAssertFalse(syncs.isEmpty, "nothing was synced at all (the group commit did not run)")
        XCTAssertEqual(sh("ls \(mnt)/w | wc -l"), "1500\n")
        let wal = (try? FileManager.default.attributesOfItem(atPath: fx.vol + "/meta.db-wal"))?[.size] as? Int ?? 0
        // The group commit starts the WAL over by 4,000 frames (plus one interval's commits) even
        // while creates keep coming; the commits themselves only do at 8,000.
        XCTAssertLessThan(wal, 5_500 * 4_120 + 32, "the WAL grew to \(wal) bytes: the group commit did not checkpoint it")
    }

    /// How many unnamed (O_TMPFILE) files the process `pid` holds open.
    private func unnamedFiles(of pid: pid_t) -> Int {
        let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd")) ?? []
        return fds.filter { fd in
            let target = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/\(fd)")) ?? ""
            return target.contains("/#") && target.hasSuffix(" (deleted)")
        }.count
    }
}
