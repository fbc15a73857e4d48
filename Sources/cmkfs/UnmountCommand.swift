import ArgumentParser
import Foundation
import CMKVolume

struct UnmountCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "unmount",
        abstract: "Unmount a cmkfs mount and wait for its daemon to finish (fusermount3 -u works too).",
        discussion: "Example: cmkfs unmount /mnt/secure"
    )

    @Argument(help: "The mountpoint.")
    var mountpoint: String

    func run() {
        reporting { () throws(CMKError) in
            let mnt = absolute(mountpoint)
            guard let entry = MountTable.entry(at: mnt) else {
                throw CMKError(.mountpoint, "\(mnt) is not mounted")
            }
            guard entry.type == "fuse.cmkfs" else {
                throw CMKError(.mountpoint, "\(mnt) is not a cmkfs mount (it is \(entry.type))")
            }
            let result = Spawn.run("/usr/bin/fusermount3", ["-u", mnt])
            guard result.status == 0 else {
                let why = result.stderr.trimmingCharacters(in: .whitespacesAndNewlines)
                throw CMKError(.mountpoint, "cannot unmount \(mnt): \(why.isEmpty ? "fusermount3 failed" : why)",
                               hint: "close the files and shells using it (fuser -vm \(mnt)), then try again")
            }
            // The daemon releases the volume's mount lock as it exits; wait so that a script can
            // remount or copy the volume right after this returns.
            if entry.source.hasPrefix("cmkfs:") {
                let volume = String(entry.source.dropFirst("cmkfs:".count))
                let deadline = Date().addingTimeInterval(15)
                while MountLock.holder(volumePath: volume) != nil && Date() < deadline { usleep(20_000) }
            }
            print("unmounted \(mnt)")
        }
    }
}
