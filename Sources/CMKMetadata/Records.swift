/// The lifecycle state of one master-key version, as the volume records it.
public enum KeyVersionState: String, Sendable, CaseIterable {
    /// New files are wrapped with this version.
    case active
    /// Still unwraps existing files; no longer wraps new ones.
    case deactivated
    /// Temporarily refused by the key provider; files under it cannot be opened.
    case disabled
    /// Destroyed; files still wrapped by it are unrecoverable.
    case purged
}

/// One master-key version known to the volume.
public struct KeyVersionRecord: Sendable, Equatable {
    /// The key provider's identifier of the master key.
    public var keyId: String
    /// The version of that key.
    public var version: Int
    /// Its state in this volume.
    public var state: KeyVersionState
    /// When the volume first recorded it, ISO-8601 UTC (stored as given).
    public var createdAt: String

    public init(keyId: String, version: Int, state: KeyVersionState, createdAt: String) {
        self.keyId = keyId
        self.version = version
        self.state = state
        self.createdAt = createdAt
    }
}

/// A file's wrapped data key and the master key that wrapped it.
public struct FileKeyRecord: Sendable, Equatable {
    /// The encrypted data encryption key.
    public var edek: [UInt8]
    /// The key id of the master key that wrapped `edek`.
    public var keyId: String
    /// The version of that master key.
    public var keyVersion: Int

    public init(edek: [UInt8], keyId: String, keyVersion: Int) {
        self.edek = edek
        self.keyId = keyId
        self.keyVersion = keyVersion
    }
}

/// How `setXattr` treats an existing attribute, mirroring XATTR_CREATE / XATTR_REPLACE.
public enum XattrSetMode: Sendable {
    /// Create or overwrite.
    case any
    /// Fail with `.exists` if the attribute is already set.
    case create
    /// Fail with `.notFound` if the attribute is not set.
    case replace
}

/// One file's wrapped key as rotation reads it.
public struct WrappedKey: Sendable, Equatable {
    public var fileID: [UInt8]
    public var keyVersion: Int
    public var edek: [UInt8]

    public init(fileID: [UInt8], keyVersion: Int, edek: [UInt8]) {
        self.fileID = fileID
        self.keyVersion = keyVersion
        self.edek = edek
    }
}

/// A re-wrapped EDEK to store: applied only if the row still holds `oldEdek` (the file may
/// have been deleted or rekeyed since it was read).
public struct Rewrap: Sendable {
    public var fileID: [UInt8]
    public var oldEdek: [UInt8]
    public var newEdek: [UInt8]
    public init(fileID: [UInt8], oldEdek: [UInt8], newEdek: [UInt8]) {
        self.fileID = fileID
        self.oldEdek = oldEdek
        self.newEdek = newEdek
    }
}

/// One row of a file (its key rows and xattrs, by name), as fsck saves it before removing an orphan.
public struct FileRow: Sendable, Codable, Equatable {
    public var name: String
    public var value: [UInt8]
    public var keyVersion: Int?

    public init(name: String, value: [UInt8], keyVersion: Int?) {
        self.name = name
        self.value = value
        self.keyVersion = keyVersion
    }
}
