import Glibc
import Synchronization
import CMKSystem

/// Where `SecretBytes` live: pages marked `MADV_DONTDUMP`, so a core dump of the process (or
/// `gcore`, which honours the mark) holds no key material, and `forbidCoreDumps` for the
/// process as a whole.
///
/// Secrets of up to `slotSize` bytes (DEKs, master keys, the 64-byte name key) share 64 KiB
/// regions cut into slots. One of up to a page (the embedded KMS's key file, read for each wrap
/// and unwrap; a small decrypted xattr value) gets a page of its own, kept for reuse like a
/// slot, so the key path makes no `mmap`/`munmap` per call; a larger one gets pages of its own,
/// unmapped when it is released. Slots and kept pages are never returned to the system (their
/// number is bounded by how many are in use at once); they are wiped by `SecretBytes` before
/// they go back.
public enum SecretMemory {
    static let slotSize = 64
    static let regionSize = 64 * 1024
    static let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))

    /// Free slots, as addresses (Int: a raw pointer is not Sendable).
    private static let freeSlots = Mutex<[Int]>([])
    /// Free single pages, as addresses.
    private static let freePages = Mutex<[Int]>([])

    /// `count` bytes, 16-byte aligned at least, on pages excluded from core dumps.
    static func allocate(_ count: Int) -> UnsafeMutableRawBufferPointer {
        if count > pageSize {
            let base = mapExcluded(roundUp(count))
            return UnsafeMutableRawBufferPointer(start: base, count: count)
        }
        if count > slotSize {
            let address = freePages.withLock { $0.popLast() } ?? Int(bitPattern: mapExcluded(pageSize))
            return UnsafeMutableRawBufferPointer(start: UnsafeMutableRawPointer(bitPattern: address), count: count)
        }
        let address = freeSlots.withLock { free -> Int in
            if let slot = free.popLast() { return slot }
            let region = Int(bitPattern: mapExcluded(regionSize))
            free.append(contentsOf: stride(from: region + regionSize - slotSize, to: region, by: -slotSize))
            return region
        }
        return UnsafeMutableRawBufferPointer(start: UnsafeMutableRawPointer(bitPattern: address), count: count)
    }

    /// Gives back what `allocate` returned (already wiped by the caller).
    static func deallocate(_ buffer: UnsafeMutableRawBufferPointer) {
        guard let base = buffer.baseAddress else { return }
        if buffer.count > pageSize {
            munmap(base, roundUp(buffer.count))
        } else if buffer.count > slotSize {
            freePages.withLock { $0.append(Int(bitPattern: base)) }
        } else {
            freeSlots.withLock { $0.append(Int(bitPattern: base)) }
        }
    }

    /// Makes this process non-dumpable (`PR_SET_DUMPABLE` 0): no core file at all, and only a
    /// process with CAP_SYS_PTRACE may attach to it or read its memory. For the mount daemon,
    /// which holds unwrapped keys. Returns 0 or the errno of the refusal.
    public static func forbidCoreDumps() -> Int32 {
        do { try ProcessControls.forbidCoreDumps(); return 0 } catch { return error.errno.rawValue }
    }

    /// Whether this process may dump core (for tests and `status`).
    public static var processIsDumpable: Bool { ProcessControls.isDumpable }

    private static func roundUp(_ count: Int) -> Int { (count + pageSize - 1) / pageSize * pageSize }

    /// Anonymous pages marked MADV_DONTDUMP. Out of address space is fatal, like malloc's.
    private static func mapExcluded(_ size: Int) -> UnsafeMutableRawPointer {
        guard let base = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
              base != UnsafeMutableRawPointer(bitPattern: -1) else {
            preconditionFailure("mmap of \(size) bytes for key material failed: \(String(cString: strerror(errno)))")
        }
        // Best effort: on a kernel without MADV_DONTDUMP (< 3.4) the pages are ordinary.
        _ = madvise(base, size, MADV_DONTDUMP)
        return base
    }
}
