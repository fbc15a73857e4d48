import XCTest
import Glibc
import CMKSystem
@testable import CMKFuse

/// `NodeSlots`, the inode table's node ids ↔ inodes: checked against a model made of the two
/// dictionaries it replaced, through random adds and removes with many identities colliding.
final class NodeSlotsTests: XCTestCase {
    private func inode(_ ino: UInt, device: UInt = 7, generation: UInt32 = 1) -> Inode {
        let handle = withUnsafeBytes(of: UInt32(8)) { Array($0) } + withUnsafeBytes(of: Int32(1)) { Array($0) }
            + withUnsafeBytes(of: UInt32(truncatingIfNeeded: ino)) { Array($0) } + withUnsafeBytes(of: generation) { Array($0) }
        return Inode(handle: CMKSystem.FileHandle(bytes: handle), identity: InodeIdentity(device: device, inode: ino), kind: S_IFREG)
    }

    func testNodeIDsStartAtTheRootsAndGoUp() {
        var slots = NodeSlots()
        let root = inode(2)
        XCTAssertEqual(slots.add(root), 1)
        XCTAssertEqual(slots.add(inode(10)), 2)
        XCTAssertEqual(slots.add(inode(11)), 3)
        XCTAssertTrue(slots.inode(1) === root)
        XCTAssertEqual(slots.count, 3)
        XCTAssertNil(slots.inode(0))
        XCTAssertNil(slots.inode(4))
        XCTAssertNil(slots.inode(1 << 32 | 2), "another generation of a live slot is not its node")
    }

    /// A freed slot comes back with another node id; the old id stays stale.
    func testAReusedSlotGetsANewNodeID() {
        var slots = NodeSlots()
        _ = slots.add(inode(2))
        let first = inode(10)
        let node = slots.add(first)
        XCTAssertTrue(slots.remove(node) === first)
        XCTAssertNil(slots.inode(node))
        XCTAssertNil(slots.node(for: first.identity))
        XCTAssertNil(slots.remove(node), "removing a stale node removes nothing")
        let second = inode(10, generation: 2)
        let again = slots.add(second)
        XCTAssertNotEqual(again, node)
        XCTAssertEqual(again & 0xFFFF_FFFF, node & 0xFFFF_FFFF, "the slot is used again")
        XCTAssertNil(slots.inode(node), "the old node id does not reach the slot's new inode")
        XCTAssertTrue(slots.inode(again) === second)
        XCTAssertEqual(slots.count, 2)
    }

    /// A reused inode number: the newest inode is the identity's; the older stays reachable by
    /// its node until removed, and removing it leaves the newest indexed.
    func testTheNewestInodeOfAnIdentityIsFound() {
        var slots = NodeSlots()
        _ = slots.add(inode(2))
        let old = inode(10, generation: 1), new = inode(10, generation: 2)
        let oldNode = slots.add(old), newNode = slots.add(new)
        XCTAssertEqual(slots.node(for: new.identity), newNode)
        XCTAssertTrue(slots.inode(oldNode) === old)
        XCTAssertTrue(slots.remove(oldNode) === old)
        XCTAssertEqual(slots.node(for: new.identity), newNode)
        XCTAssertTrue(slots.remove(newNode) === new)
        XCTAssertNil(slots.node(for: new.identity))
    }

    func testRandomAddsAndRemovesAgreeWithDictionaries() {
        var generator = SystemRandomNumberGenerator()
        var slots = NodeSlots()
        var byNode: [UInt64: Inode] = [:], byIdentity: [InodeIdentity: UInt64] = [:]
        let root = inode(2)
        byNode[slots.add(root)] = root
        byIdentity[root.identity] = 1
        var removed: [UInt64] = []
        for step in 0..<60_000 {
            // Grow to ~6,000 inodes, then shrink and grow again: the index grows and empties.
            let target = step < 20_000 ? 6_000 : (step < 40_000 ? 200 : 3_000)
            if byNode.count < target || Int.random(in: 0..<3, using: &generator) == 0 {
                let fresh = inode(UInt.random(in: 3..<4_000, using: &generator), device: UInt.random(in: 1...2, using: &generator),
                                  generation: UInt32(step))
                let node = slots.add(fresh)
                XCTAssertNil(byNode[node], "node \(node) handed out twice")
                byNode[node] = fresh
                byIdentity[fresh.identity] = node
            } else if let victim = byNode.keys.filter({ $0 != 1 }).randomElement(using: &generator) {
                let inode = byNode.removeValue(forKey: victim)!
                XCTAssertTrue(slots.remove(victim) === inode)
                if byIdentity[inode.identity] == victim { byIdentity[inode.identity] = nil }
                removed.append(victim)
            }
            if step % 997 == 0 {
                XCTAssertEqual(slots.count, byNode.count)
                for (node, inode) in byNode { XCTAssertTrue(slots.inode(node) === inode) }
                for (identity, node) in byIdentity { XCTAssertEqual(slots.node(for: identity), node) }
                for node in removed.suffix(200) where byNode[node] == nil { XCTAssertNil(slots.inode(node)) }
                XCTAssertEqual(Set(slots.all.map { ObjectIdentifier($0) }), Set(byNode.values.map { ObjectIdentifier($0) }))
            }
        }
        // Identities never added, or all of whose inodes are gone, are not found.
        for ino in 4_000..<4_100 { XCTAssertNil(slots.node(for: InodeIdentity(device: 1, inode: UInt(ino)))) }
    }
}
