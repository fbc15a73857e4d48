import Glibc
import CMKCrypto

/// One master key's versions as the simulated KMS stores them in `<dir>/<key-id>.key` (mode 0600):
///
/// | offset | size | field                                              |
/// |--------|------|----------------------------------------------------|
/// | 0      | 4    | magic `CMKK`                                       |
/// | 4      | 2    | format version, big-endian (1)                     |
/// | 6      | 2    | reserved (0)                                       |
/// | 8      | 4    | number of versions n, big-endian                   |
/// | 12     | 48·n | entries: version u32, state u8 (0 enabled, 1 disabled, 2 destroyed), 3 reserved, created (Unix seconds) u64, key 32 bytes (zero once destroyed) |
///
/// It is a simulation of a customer's KMS: a real KMS keeps this inside its own boundary. What
/// matters for cmkfs is that it never sits in the volume.
struct KeystoreFile {
    struct Version {
        var number: Int
        var state: ProviderKeyState
        var createdAt: UInt64
        /// Nil once destroyed.
        var material: SecretBytes?
    }

    static let headerSize = 12
    static let entrySize = 48
    static let magic: [UInt8] = Array("CMKK".utf8)
    var versions: [Version] = []

    /// Parses the file's bytes; `bytes` holds key material and is wiped by the caller. Only the
    /// versions `materialOf` picks get their material copied out (the others have nil, as if
    /// destroyed): a wrap or unwrap needs one version's key, a state check none.
    static func parse(_ bytes: UnsafeRawBufferPointer, path: String,
                      materialOf: (Int) -> Bool = { _ in true }) throws(KeyProviderError) -> KeystoreFile {
        guard bytes.count >= headerSize, Array(bytes[0..<4]) == magic else { throw .corrupt("\(path): not a keystore file") }
        let format = Int(bytes[4]) << 8 | Int(bytes[5])
        guard format == 1 else { throw .corrupt("\(path): unknown keystore format \(format)") }
        let count = Int(readBE32(bytes, 8))
        guard bytes.count == headerSize + count * entrySize else { throw .corrupt("\(path): truncated (\(bytes.count) bytes for \(count) versions)") }
        var file = KeystoreFile()
        file.versions.reserveCapacity(count)
        for i in 0..<count {
            let at = headerSize + i * entrySize
            let state: ProviderKeyState
            switch bytes[at + 4] {
            case 0: state = .enabled
            case 1: state = .disabled
            case 2: state = .destroyed
            default: throw .corrupt("\(path): version entry \(i) has unknown state \(bytes[at + 4])")
            }
            var created: UInt64 = 0
            for b in 0..<8 { created = created << 8 | UInt64(bytes[at + 8 + b]) }
            let number = Int(readBE32(bytes, at))
            let material = state == .destroyed || !materialOf(number) ? nil
                : SecretBytes(copying: UnsafeRawBufferPointer(rebasing: bytes[(at + 16)..<(at + 48)]))
            file.versions.append(Version(number: number, state: state, createdAt: created, material: material))
        }
        return file
    }

    /// Serializes into a fresh buffer the caller must wipe and free.
    func serialize() -> UnsafeMutableRawBufferPointer {
        let out = UnsafeMutableRawBufferPointer.allocate(byteCount: Self.headerSize + versions.count * Self.entrySize, alignment: 16)
        out.initializeMemory(as: UInt8.self, repeating: 0)
        out.copyBytes(from: Self.magic)
        out[5] = 1
        writeBE32(out, 8, UInt32(versions.count))
        for (i, v) in versions.enumerated() {
            let at = Self.headerSize + i * Self.entrySize
            writeBE32(out, at, UInt32(v.number))
            out[at + 4] = v.state == .enabled ? 0 : v.state == .disabled ? 1 : 2
            for b in 0..<8 { out[at + 8 + b] = UInt8(truncatingIfNeeded: v.createdAt >> (56 - 8 * UInt64(b))) }
            v.material?.withUnsafeBytes { k in
                UnsafeMutableRawBufferPointer(rebasing: out[(at + 16)..<(at + 48)]).copyMemory(from: k)
            }
        }
        return out
    }
}

private func readBE32(_ b: UnsafeRawBufferPointer, _ at: Int) -> UInt32 {
    UInt32(b[at]) << 24 | UInt32(b[at + 1]) << 16 | UInt32(b[at + 2]) << 8 | UInt32(b[at + 3])
}

private func writeBE32(_ b: UnsafeMutableRawBufferPointer, _ at: Int, _ v: UInt32) {
    b[at] = UInt8(v >> 24); b[at + 1] = UInt8((v >> 16) & 0xFF); b[at + 2] = UInt8((v >> 8) & 0xFF); b[at + 3] = UInt8(v & 0xFF)
}
