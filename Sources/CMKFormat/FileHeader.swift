/// The 24-byte header at the start of every backing file:
///
/// | offset | size | field                                   |
/// |--------|------|-----------------------------------------|
/// | 0      | 4    | magic `CMKF`                            |
/// | 4      | 2    | content format version, big-endian (1)  |
/// | 6      | 2    | flags, big-endian (0; reserved)         |
/// | 8      | 16   | file id                                 |
public enum FileHeader {
    public static let size = 24
    public static let version: UInt16 = 1
    static let magic: [UInt8] = Array("CMKF".utf8)

    /// The header bytes for `fileID`.
    public static func encode(_ fileID: FileID) -> [UInt8] {
        magic + [UInt8(version >> 8), UInt8(version & 0xFF), 0, 0] + fileID.bytes
    }

    /// Parses a header; any mismatch is `.corruptHeader` (tampered or not a cmkfs file).
    public static func decode(_ bytes: UnsafeRawBufferPointer) throws(ContentError) -> FileID {
        guard bytes.count >= size else { throw .corruptHeader("header is \(bytes.count) bytes, expected \(size)") }
        guard Array(bytes[0..<4]) == magic else { throw .corruptHeader("bad magic") }
        let version = UInt16(bytes[4]) << 8 | UInt16(bytes[5])
        guard version == Self.version else { throw .corruptHeader("unknown content format version \(version)") }
        return FileID(bytes: Array(bytes[8..<24]))!
    }
}
