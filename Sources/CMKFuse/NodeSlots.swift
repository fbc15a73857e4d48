/// The kernel's node ids ↔ inodes, in two flat arrays rather than two dictionaries
/// (`InodeTable` holds it under its mutex).
///
/// The kernel may know hundreds of thousands of inodes. A `[UInt64: Inode]` by node id and an
/// `[InodeIdentity: UInt64]` by backing object took 16 and 24 bytes per bucket at up to 3/4
/// load, ~100 bytes per inode, and each doubling held the old and the new storage at once (at
/// 100,000 inodes 14 MB of the daemon's heap at its peak). Here a node id names a slot of
/// `slots` (8 bytes each), and `index`, an open-addressing table of slot numbers (4 bytes per
/// bucket, linear probing), finds a backing object's newest slot.
///
/// A node id is `generation << 32 | slot`. A freed slot is used again with the next
/// generation, so a node id is not handed out twice (until a slot was reused 2^32 times) and a
/// stale id does not reach the slot's next inode; the first use of each slot has generation 0,
/// so node ids start as 2, 3, 4, … (1 is the root's).
struct NodeSlots {
    /// Inodes by slot; nil: free. Slot 0 is never used, slot 1 is the root's.
    private var slots: [Inode?] = [nil]
    /// Free slots, each as the node id its next use gets.
    private var free: [UInt64] = []
    /// Slot numbers by the hash of their inode's identity; 0: empty. A power of two long.
    private var index = [UInt32](repeating: 0, count: 16)
    private var indexed = 0
    /// Inodes held.
    private(set) var count = 0

    /// The inode of `node`, if it is live.
    func inode(_ node: UInt64) -> Inode? {
        let slot = Int(truncatingIfNeeded: node & 0xFFFF_FFFF)
        guard slot < slots.count, let inode = slots[slot], inode.nodeGeneration == UInt32(truncatingIfNeeded: node >> 32) else { return nil }
        return inode
    }

    /// The node id of the newest inode of `identity`.
    func node(for identity: InodeIdentity) -> UInt64? {
        find(identity).map { nodeID(Int(index[$0])) }
    }

    /// Adds `inode` with a new node id, which becomes its identity's newest; returns the id.
    mutating func add(_ inode: Inode) -> UInt64 {
        let slot: Int
        if let next = free.popLast() {
            slot = Int(truncatingIfNeeded: next & 0xFFFF_FFFF)
            inode.nodeGeneration = UInt32(truncatingIfNeeded: next >> 32)
            slots[slot] = inode
        } else {
            slot = slots.count
            precondition(slot < Int(UInt32.max), "more than 2^32 inodes")
            inode.nodeGeneration = 0
            slots.append(inode)
        }
        count += 1
        if let bucket = find(inode.identity) {
            index[bucket] = UInt32(slot)
        } else {
            if (indexed + 1) * 2 > index.count { grow() }
            insert(slot)
        }
        return nodeID(slot)
    }

    /// Removes the inode of `node` (live), and returns it for the caller to release.
    mutating func remove(_ node: UInt64) -> Inode? {
        guard let inode = inode(node) else { return nil }
        let slot = Int(truncatingIfNeeded: node & 0xFFFF_FFFF)
        if let bucket = find(inode.identity), Int(index[bucket]) == slot { erase(bucket) }
        slots[slot] = nil
        free.append(UInt64(inode.nodeGeneration &+ 1) << 32 | UInt64(slot))
        count -= 1
        return inode
    }

    /// Every live inode.
    var all: [Inode] { slots.compactMap { $0 } }

    private func nodeID(_ slot: Int) -> UInt64 {
        UInt64(slots[slot]!.nodeGeneration) << 32 | UInt64(slot)
    }

    private func home(_ identity: InodeIdentity) -> Int {
        identity.hashValue & (index.count - 1)
    }

    /// The bucket holding `identity`'s slot.
    private func find(_ identity: InodeIdentity) -> Int? {
        let mask = index.count - 1
        var bucket = home(identity)
        while index[bucket] != 0 {
            if slots[Int(index[bucket])]!.identity == identity { return bucket }
            bucket = (bucket + 1) & mask
        }
        return nil
    }

    private mutating func insert(_ slot: Int) {
        let mask = index.count - 1
        var bucket = home(slots[slot]!.identity)
        while index[bucket] != 0 { bucket = (bucket + 1) & mask }
        index[bucket] = UInt32(slot)
        indexed += 1
    }

    /// Empties `bucket`, moving back the entries after it that would no longer be found
    /// (backward-shift deletion: no tombstones).
    private mutating func erase(_ bucket: Int) {
        let mask = index.count - 1
        var hole = bucket, next = bucket
        while true {
            next = (next + 1) & mask
            guard index[next] != 0 else { break }
            let wanted = home(slots[Int(index[next])]!.identity)
            // Stays if its home lies cyclically in (hole, next]: moving it before its home would lose it.
            let stays = hole <= next ? (hole < wanted && wanted <= next) : (hole < wanted || wanted <= next)
            if stays { continue }
            index[hole] = index[next]
            hole = next
        }
        index[hole] = 0
        indexed -= 1
    }

    private mutating func grow() {
        let old = index
        index = [UInt32](repeating: 0, count: old.count * 2)
        indexed = 0
        for slot in old where slot != 0 { insert(Int(slot)) }
    }
}
