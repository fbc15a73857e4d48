import Synchronization

extension HMACSHA256 {
    /// A few `Keyed` contexts for one key, shared by the threads that MAC under it (the name
    /// bindings of every create and key-miss open): each context hashes the key's pads once,
    /// where a one-shot MAC built, keyed and freed a context per message. A context keeps the key
    /// (as its pads) until the pool goes; freeing it cleanses them, so drop the pool with the key.
    public final class KeyedPool: Sendable {
        private let key: SecretBytes
        private let idle = Mutex<[Slot]>([])
        /// Contexts kept idle at most; more callers at once each get a context of their own.
        private let limit: Int

        public init(key: SecretBytes, limit: Int = 8) {
            self.key = key
            self.limit = limit
        }

        /// The MAC of the concatenation of `parts` (as `HMACSHA256.mac(key:_:)`).
        public func mac(_ parts: [[UInt8]]) throws(CryptoError) -> [UInt8] {
            let slot: Slot
            if let idleSlot = idle.withLock({ $0.popLast() }) { slot = idleSlot } else { slot = Slot(try Keyed(key: key)) }
            defer { idle.withLock { if $0.count < limit { $0.append(slot) } } }
            return try slot.keyed.mac(parts)
        }

        /// Contexts idle now (tests).
        public var idleCount: Int { idle.withLock { $0.count } }
    }

    /// One context of a pool.
    /// Sound as @unchecked Sendable: the context is used by one thread at a time — taken out of
    /// the pool under its lock, used only by the taker, and put back under the lock.
    final class Slot: @unchecked Sendable {
        let keyed: Keyed
        init(_ keyed: Keyed) { self.keyed = keyed }
    }
}
