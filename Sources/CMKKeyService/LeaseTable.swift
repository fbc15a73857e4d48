/// The key cache's entries by file id, in the order they were last leased: a dictionary from the
/// id to a slot of one array, the slots threaded on a doubly linked list (most recent first) and
/// freed slots on a list of their own. A lookup, an insert, a move to the front and the eviction
/// of the least recent entry each cost O(1).
///
/// It replaced a map whose eviction, once the capacity was passed, collected every unpinned entry,
/// sorted them by last use and dropped the oldest eighth: at the default 32,768 entries a miss
/// held the cache's lock for ~12 ms once per 4,096 misses, every open (hit or miss) waiting
/// behind it, and each such pass dropped 4,096 keys more than the capacity asked for.
///
/// A value type guarded by `KeyCache.state`'s mutex; nothing in it locks.
struct LeaseTable {
    private struct Slot {
        var lease: KeyLease?
        var prev: Int32
        var next: Int32
    }

    private var index: [CacheKey: Int32] = [:]
    private var slots: [Slot] = []
    /// Most and least recently leased slots (-1: none).
    private var head: Int32 = -1, tail: Int32 = -1
    /// First free slot, its successors linked through `next` (-1: none).
    private var free: Int32 = -1

    var count: Int { index.count }

    /// The entry of `key`, without changing the order.
    subscript(key: CacheKey) -> KeyLease? {
        guard let i = index[key] else { return nil }
        return slots[Int(i)].lease
    }

    /// Every entry, in no particular order.
    var leases: [KeyLease] { slots.compactMap(\.lease) }

    /// Moves `key`'s entry to the front (it was leased now).
    mutating func touch(_ key: CacheKey) {
        guard let i = index[key], i != head else { return }
        unlink(i)
        linkFront(i)
    }

    /// Puts `lease` in front under its file id; returns the entry it replaced.
    @discardableResult
    mutating func insert(_ lease: KeyLease) -> KeyLease? {
        if let i = index[lease.cacheKey] {
            let old = slots[Int(i)].lease
            slots[Int(i)].lease = lease
            if i != head { unlink(i); linkFront(i) }
            return old
        }
        let i: Int32
        if free >= 0 {
            i = free
            free = slots[Int(i)].next
            slots[Int(i)].lease = lease
        } else {
            i = Int32(slots.count)
            slots.append(Slot(lease: lease, prev: -1, next: -1))
        }
        index[lease.cacheKey] = i
        linkFront(i)
        return nil
    }

    /// Takes `key`'s entry out; returns it.
    @discardableResult
    mutating func remove(_ key: CacheKey) -> KeyLease? {
        guard let i = index.removeValue(forKey: key) else { return nil }
        unlink(i)
        let lease = slots[Int(i)].lease
        slots[Int(i)] = Slot(lease: nil, prev: -1, next: free)
        free = i
        return lease
    }

    /// Takes the least recently leased entries out until at most `capacity` are left, skipping
    /// those `isPinned` says are in use (each skipped one moves to the front: it is in use now, so
    /// the next eviction does not look at it again first). Gives up once every entry was looked
    /// at, so a cache of pinned entries only (more files open than the capacity) stays over it.
    mutating func evict(downTo capacity: Int, isPinned: (KeyLease) -> Bool) -> [KeyLease] {
        var out: [KeyLease] = []
        var looked = 0
        while index.count > capacity, tail >= 0, looked < index.count {
            looked += 1
            let i = tail
            guard let lease = slots[Int(i)].lease else { break }
            if isPinned(lease) {
                unlink(i)
                linkFront(i)
                continue
            }
            remove(lease.cacheKey)
            out.append(lease)
        }
        return out
    }

    private mutating func unlink(_ i: Int32) {
        let (p, n) = (slots[Int(i)].prev, slots[Int(i)].next)
        if p >= 0 { slots[Int(p)].next = n } else { head = n }
        if n >= 0 { slots[Int(n)].prev = p } else { tail = p }
        slots[Int(i)].prev = -1
        slots[Int(i)].next = -1
    }

    private mutating func linkFront(_ i: Int32) {
        slots[Int(i)].prev = -1
        slots[Int(i)].next = head
        if head >= 0 { slots[Int(head)].prev = i }
        head = i
        if tail < 0 { tail = i }
    }
}
