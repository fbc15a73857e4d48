// syscall-overhead: what CMKSystem's wrappers cost over the raw calls on the daemon's hot path.
// Not a test; run it outside `swift test`, on a release build:
//
//     swift build -c release --product syscall-overhead
//     .build/release/syscall-overhead [--calls N] [--rounds R] [--dir DIR]
//
// For pread and pwrite (4 KiB, page cache) and openat+close, it times N calls through the
// wrapper (`Descriptor.pread`/`pwrite`, `Descriptor.openat` into a `FileDescriptor` that closes
// itself) and N through Glibc directly, alternating rounds so both see the same machine load.
// It prints the median and minimum µs per call of each, by thread CPU time (the machine is
// shared: CPU time is steadier than wall time) and by wall time.
import Glibc
import BenchSupport
import CMKSystem

func run(_ o: BenchOptions) throws {
    let calls = o.calls
    /// µs per call of `body` (which makes `calls` calls), by CPU time and by wall time.
    func measure(_ body: () -> Void) -> (cpu: Double, wall: Double) {
        let (c0, w0) = (now(CLOCK_THREAD_CPUTIME_ID), now(CLOCK_MONOTONIC))
        body()
        let (c1, w1) = (now(CLOCK_THREAD_CPUTIME_ID), now(CLOCK_MONOTONIC))
        return ((c1 - c0) * 1e6 / Double(calls), (w1 - w0) * 1e6 / Double(calls))
    }
    let path = o.directory + "/syscall-overhead-\(getpid())"
    let file = try FileDescriptor.open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, mode: 0o600)
    defer { try? Descriptor.cwd.unlink(path) }
    let fd = file.descriptor
    let block = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 4096)
    defer { block.deallocate() }
    for i in 0..<4096 { block[i] = UInt8(truncatingIfNeeded: i) }
    for i in 0..<16 { try fd.pwriteAll(UnsafeRawBufferPointer(block), at: i * 4096) }
    // The sink keeps the optimizer from dropping calls whose results are unused.
    var sink = 0
    let cases: [(String, wrapped: () -> Void, raw: () -> Void)] = [
        ("pread 4 KiB", {
            for i in 0..<calls { sink &+= (try? fd.pread(into: block, at: (i & 15) * 4096)) ?? 0 }
        }, {
            for i in 0..<calls { sink &+= Glibc.pread(fd.rawValue, block.baseAddress, 4096, off_t((i & 15) * 4096)) }
        }),
        ("pwrite 4 KiB", {
            for i in 0..<calls { sink &+= (try? fd.pwrite(UnsafeRawBufferPointer(block), at: (i & 15) * 4096)) ?? 0 }
        }, {
            for i in 0..<calls { sink &+= Glibc.pwrite(fd.rawValue, block.baseAddress, 4096, off_t((i & 15) * 4096)) }
        }),
        ("openat+close", {
            for _ in 0..<calls {
                if let f = try? Descriptor.cwd.openat(path, O_RDONLY | O_CLOEXEC) { sink &+= Int(f.rawValue) }
            }
        }, {
            for _ in 0..<calls {
                let f = openat(AT_FDCWD, path, O_RDONLY | O_CLOEXEC)
                sink &+= Int(f)
                close(f)
            }
        }),
    ]
    print("\(calls) calls a round, \(o.rounds) rounds, wrapper and raw alternating; µs per call")
    print("call            wrapper cpu med/min   raw cpu med/min       wrapper wall med   raw wall med")
    for (name, wrapped, raw) in cases {
        var w: [(cpu: Double, wall: Double)] = [], r: [(cpu: Double, wall: Double)] = []
        for round in 0..<o.rounds {
            // Alternate which goes first, so neither always runs on a warmer cache.
            if round % 2 == 0 { w.append(measure(wrapped)); r.append(measure(raw)) }
            else { r.append(measure(raw)); w.append(measure(wrapped)) }
        }
        let wc = w.map(\.cpu), rc = r.map(\.cpu)
        let columns: [(String, Int)] = [
            (name, 16),
            (fmt(median(wc)) + " / " + fmt(wc.min()!), 22),
            (fmt(median(rc)) + " / " + fmt(rc.min()!), 22),
            (fmt(median(w.map(\.wall))), 19),
            (fmt(median(r.map(\.wall))), 0),
        ]
        print(columns.map { $0.0 + String(repeating: " ", count: max(0, $0.1 - $0.0.count)) }.joined())
    }
    if sink == 42 { print("") }
}

let options = BenchOptions.parse(tool: "syscall-overhead", calls: 100_000, directory: "/tmp", only: false)
do { try run(options) } catch { print("syscall-overhead: \(error)"); exit(1) }
