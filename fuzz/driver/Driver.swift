// The libFuzzer driver (built only with CMKFS_FUZZ set, see Package.swift and fuzz/run.sh).
// The target is CMKFS_FUZZ_TARGET, or the part of argv[0] after "cmkfs-fuzz-" (a symlink).
import Glibc
import CLibFuzzer
import CMKFuzzTargets

private let target: FuzzTarget = {
    let fromArgv = CommandLine.arguments.first.map { String($0.split(separator: "/").last ?? "") }
        .flatMap { $0.hasPrefix("cmkfs-fuzz-") ? String($0.dropFirst("cmkfs-fuzz-".count)) : nil }
    let name = getenv("CMKFS_FUZZ_TARGET").map { String(cString: $0) } ?? fromArgv ?? ""
    guard let target = FuzzTargets.named(name) else {
        let names = FuzzTargets.all.map(\.name).joined(separator: ", ")
        printError("cmkfs-fuzz: set CMKFS_FUZZ_TARGET to one of: \(names)")
        exit(2)
    }
    return target
}()

/// SwiftPM links every executable target with `--defsym main=<module>_main`, so a driver that
/// relies on libFuzzer's own `main` does not link; this is that `main`, handing over to libFuzzer.
/// (Without the alias it is simply unused and libFuzzer's `main` runs: both ways work.)
@_cdecl("cmkfs_fuzz_main")
public func fuzzMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    var argc = argc
    var argv = argv
    return LLVMFuzzerRunDriver(&argc, &argv) { data, size in testOneInput(data, size) }
}

@_cdecl("LLVMFuzzerInitialize")
public func initialize(_ argc: UnsafeMutablePointer<Int32>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> Int32 {
    _ = target  // choose (or refuse) before the first input, not inside it
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func testOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let bytes = size == 0 || data == nil ? [] : Array(UnsafeBufferPointer(start: data, count: size))
    do { try target.run(bytes) } catch {
        // An invariant that did not hold is a finding like a crash: abort so libFuzzer saves the input.
        printError("cmkfs-fuzz: invariant violated: \(error)")
        abort()
    }
    return 0
}

private func printError(_ line: String) {
    let bytes = Array((line + "\n").utf8)
    _ = bytes.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
}
