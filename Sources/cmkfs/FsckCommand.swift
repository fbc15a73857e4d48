import ArgumentParser
import Foundation
import Glibc
import CMKAudit
import CMKVolume

/// `cmkfs fsck`: the offline consistency check of a volume.
struct FsckCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fsck",
        abstract: "Check an unmounted volume: headers, keys, every block, rows, the audit log.",
        discussion: """
        Names every problem by path and file id. With --repair it fixes what is safe (finishes \
        interrupted rekeys, removes stray copies and rows whose file is gone) and moves files \
        nothing can decrypt to VOLUME/lost+found; it never deletes readable data. A key provider \
        that is unavailable is asked again with backoff; files it still cannot answer for are \
        reported as not checked and never repaired. Exit 0: clean (or everything repaired); 15: \
        problems remain; 16: some files could not be checked (provider unavailable). \
        Example: cmkfs fsck /srv/vol --repair
        """
    )
    @Argument(help: "The volume directory (unmounted).") var volume: String
    @Flag(help: "Fix what can be fixed safely (each repair is an audit record).") var repair = false
    @Flag(name: .customLong("no-blocks"), help: "Skip decrypting every block (quicker; headers, keys and rows only).")
    var noBlocks = false
    @OptionGroup var access: KeyAccessOptions
    @Flag(help: "Print one JSON object (docs/fsck.md) instead of text.") var json = false

    func run() {
        reporting { () throws(CMKError) in
            let pin = try PINSource.forVolume(volume, pinFile: access.pinFile, promptAtTerminal: true)
            // An outage must never pass for an answer about a file: provider calls are retried.
            let v = try Volume.open(at: volume, kmsDir: access.kmsDir, pin: pin, retry: .offlineCheck, purpose: "fsck")
            if let holder = MountLock.holder(volumePath: v.path) {
                throw CMKError(.alreadyMounted, "\(v.path) is mounted at \(holder.mountpoint) (pid \(holder.pid)); fsck checks an unmounted volume",
                               hint: "unmount it first: cmkfs unmount \(holder.mountpoint)")
            }
            // Hold the mount lock so no mount starts while files are checked or moved.
            let lock = try MountLock.acquire(v, mountpoint: "(cmkfs fsck, pid \(getpid()))")
            defer { withExtendedLifetime(lock) {} }
            let audit = CommandAudit(path: v.path, direct: true) { () throws(CMKError) in try v.openCommandAuditLog() }
            try audit.openNow()
            var bar = ProgressReport("checking", unit: "files")
            let report: FsckReport
            do throws(CMKError) {
                report = try v.fsck(repair: repair, checkBlocks: !noBlocks, audit: audit.sink) { bar.update($0, $1) }
                try audit.record(.command("fsck", result: report.remaining == 0 ? "ok" : "error",
                                          keyID: v.activeKey.keyID,
                                          detail: "\(repair ? "repair" : "check"): \(report.filesChecked) files, \(report.blocksChecked) blocks, \(report.problems.count) problems, \(report.remaining) remaining"),
                                 durable: true)
            } catch {
                try? audit.close()
                throw error
            }
            try audit.close()
            if json {
                printJSON(report)
            } else {
                for p in report.problems {
                    var line = "\(p.repaired ? "repaired" : "PROBLEM"): \(p.kind)"
                    if let path = p.path { line += " \(path)" }
                    if let id = p.fileID { line += " (file \(id))" }
                    if let block = p.block { line += " block \(block)" }
                    line += ": \(p.detail)"
                    if !p.repaired, let fix = p.repair { line += " [--repair would: \(fix)]" }
                    print(line)
                }
                print("\(report.filesChecked) files, \(report.blocksChecked) blocks, \(report.auditRecords) audit records checked in "
                      + String(format: "%.2f s", report.seconds) + "; \(report.problems.count) problems, \(report.remaining) remaining"
                      + (report.notChecked > 0 ? " (\(report.notChecked) files not checked)" : ""))
            }
            let auditNotChecked = report.problems.contains { $0.kind == "not-checked" && $0.fileID == nil }
            if report.notChecked > 0 || auditNotChecked {
                let others = report.remaining - report.notChecked - (auditNotChecked ? 1 : 0)
                throw CMKError(.notChecked, "could not check \(report.notChecked) files\(auditNotChecked ? " and the audit log" : ""): provider unavailable"
                               + (others > 0 ? "; \(others) other problems remain in \(v.path)" : ""),
                               hint: "nothing was repaired on their account; once the key provider answers again, run: cmkfs fsck \(volume)")
            }
            if report.remaining > 0 {
                throw CMKError(.fsckProblems, "\(report.remaining) problems remain in \(v.path)",
                               hint: repair ? "the rest cannot be repaired safely: see docs/fsck.md" : "fix what is safe with: cmkfs fsck \(volume) --repair")
            }
        }
    }
}
