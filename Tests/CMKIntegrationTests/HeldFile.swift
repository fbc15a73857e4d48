import Foundation
import XCTest

extension IntegrationTestCase {
    /// The key owner's kill switch against a file already open: writes `held` to `path`, holds it
    /// open in another process with its key cached (one read), runs `cut` (the owner's action,
    /// outside cmkfs), then reads with the page cache dropped every 20 ms until a read is refused
    /// with EACCES. Returns the seconds from the end of `cut` to the refusal, or nil (recording a
    /// failure with `log`, e.g. the mount's log) if reads still work after 30 s.
    func secondsUntilHeldFileIsCut(_ path: String, log: @autoclosure () -> String,
                                   file: StaticString = #filePath, line: UInt = #line,
                                   cut: () throws -> Void) throws -> Double? {
        sh("printf held > \(path)", file: file, line: line)
        let script = """
            import os, sys, time
            path, go, done = sys.argv[1:4]
            fd = os.open(path, os.O_RDONLY)
            assert os.pread(fd, 10, 0) == b'held'
            open(done, 'w').close()
            while not os.path.exists(go): time.sleep(0.005)
            start = time.monotonic()
            while time.monotonic() - start < 30:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                try:
                    os.pread(fd, 10, 0)
                except PermissionError:
                    print('cut after %.2f s' % (time.monotonic() - start)); break
                time.sleep(0.02)
            else:
                print('still readable after 30 s')
            """
        let go = fx.root + "/held-go", ready = fx.root + "/held-ready"
        try? FileManager.default.removeItem(atPath: go)
        try? FileManager.default.removeItem(atPath: ready)
        let holder = Process()
        holder.executableURL = URL(fileURLWithPath: Shell.python)
        holder.arguments = ["-c", script, path, go, ready]
        let out = Pipe()
        holder.standardOutput = out
        try holder.run()
        defer { if holder.isRunning { holder.terminate() } }
        guard waitUntil(deadline: 30, { FileManager.default.fileExists(atPath: ready) }) else {
            XCTFail("the holder never opened \(path)", file: file, line: line)
            return nil
        }
        try cut()
        _ = FileManager.default.createFile(atPath: go, contents: nil)
        holder.waitUntilExit()
        let said = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        guard said.hasPrefix("cut after ") else {
            XCTFail("\(said)\n\(log())", file: file, line: line)
            return nil
        }
        return Double(said.dropFirst("cut after ".count).prefix { $0 != " " })
    }
}
