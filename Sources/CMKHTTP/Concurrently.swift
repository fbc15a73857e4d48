import Foundation
import Synchronization

/// Runs `body(i)` for every `i` in `0..<count` on `width` threads of its own and returns when all
/// are done. For blocking network calls: a dispatch queue would run only about one per core.
public func forEachConcurrently(_ count: Int, width: Int, _ body: @escaping @Sendable (Int) -> Void) {
    guard count > 0 else { return }
    let threads = max(1, min(width, count))
    if threads == 1 {
        for i in 0..<count { body(i) }
        return
    }
    let next = NextIndex()
    let group = DispatchGroup()
    for _ in 0..<threads {
        group.enter()
        let thread = Thread {
            while let i = next.take(below: count) { body(i) }
            group.leave()
        }
        thread.stackSize = 1 << 20
        thread.start()
    }
    group.wait()
}

private final class NextIndex: Sendable {
    private let value = Mutex(0)
    func take(below limit: Int) -> Int? {
        value.withLock { v in
            guard v < limit else { return nil }
            defer { v += 1 }
            return v
        }
    }
}
