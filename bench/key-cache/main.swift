// key-cache: CPU per key-cache miss (a lease whose load hands back a ready key, so only the
// cache's own bookkeeping is measured), per hit, and the longest single miss once the cache is
// full: the one that evicts, under the cache's lock, while every other open waits for it.
// Not a test; run it outside `swift test`, on a release build:
//
//     swift build -c release --product key-cache
//     .build/release/key-cache [--calls N] [--rounds R]
//
// The cache has its default capacity (32,768); a round first fills it, then measures `calls`
// misses on new file ids past the capacity (evicting), then `calls` hits. Prints the median and
// minimum µs per call by thread CPU time, the longest miss and how many misses took over 1 ms
// (CPU time too: a preemption on a loaded machine does not count).
import Glibc
import BenchSupport
import CMKCrypto
import CMKKeyService
import CMKKeys

/// Unowned provider: nothing here asks it anything (the load closures hand back the key).
final class NoProvider: KeyProvider {
    var kind: String { "none" }
    func createKey() throws(KeyProviderError) -> KeyRef { throw .unavailable("none") }
    func createVersion(of keyID: String) throws(KeyProviderError) -> KeyRef { throw .unavailable("none") }
    func wrap(_ dek: SecretBytes, with key: KeyRef, context: WrapContext) throws(KeyProviderError) -> [UInt8] { throw .unavailable("none") }
    func unwrap(_ edek: [UInt8], with key: KeyRef, context: WrapContext) throws(KeyProviderError) -> SecretBytes { throw .unavailable("none") }
    func state(of key: KeyRef) throws(KeyProviderError) -> ProviderKeyState { .enabled }
    func setState(_ state: ProviderKeyState, of key: KeyRef) throws(KeyProviderError) {}
}

func fileID(_ n: Int) -> [UInt8] {
    var words = (UInt64(n), UInt64(0x5EED))
    return withUnsafeBytes(of: &words) { Array($0) }
}

func run(_ o: BenchOptions) throws {
    let key = try SecretBytes.random(count: 32)
    let ref = KeyRef(keyID: "mk-0123456789abcdef", version: 1)
    var misses: [Double] = [], hits: [Double] = [], longest: [Double] = [], slow: [Double] = []
    for _ in 0..<o.rounds {
        let cache = KeyCache(policy: CachePolicy(), provider: NoProvider())
        let capacity = cache.policy.capacity
        for n in 0..<capacity { cache.unpin(cache.lease(for: fileID(n)) { (key, ref) }) }
        var worst = 0.0, overOneMs = 0
        let t0 = cpuNow()
        for n in capacity..<(capacity + o.calls) {
            let w0 = cpuNow()
            let lease = cache.lease(for: fileID(n)) { (key, ref) }
            let took = cpuNow() - w0
            worst = max(worst, took)
            if took > 0.001 { overOneMs += 1 }
            cache.unpin(lease)
        }
        misses.append((cpuNow() - t0) * 1e6 / Double(o.calls))
        longest.append(worst * 1e6)
        slow.append(Double(overOneMs))
        let first = capacity + o.calls - capacity / 2
        let t1 = cpuNow()
        for i in 0..<o.calls { cache.unpin(cache.lease(for: fileID(first + i % (capacity / 2))) { (key, ref) }) }
        hits.append((cpuNow() - t1) * 1e6 / Double(o.calls))
    }
    print("case                 median µs   min µs   (\(o.rounds) rounds; thread CPU time)")
    for (name, xs) in [("miss (evicting)", misses), ("hit", hits), ("longest miss", longest), ("misses over 1 ms", slow)] {
        print(name.padding(toLength: 20, withPad: " ", startingAt: 0), fmt(median(xs)).padding(toLength: 11, withPad: " ", startingAt: 0), fmt(xs.min()!))
    }
}

let options = BenchOptions.parse(tool: "key-cache", calls: 100_000, rounds: 5, directory: "/tmp", only: false)
do { try run(options) } catch { print("key-cache: \(error)"); exit(1) }
