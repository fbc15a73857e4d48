import CMKMetadata

/// The one place a volume's metadata backend is chosen. Today every volume keeps its metadata in
/// SQLite (`VOLUME/meta.db`, `MetadataStore`); a second backend (PostgreSQL, say) is added here,
/// picked by a field of the volume's config, and nothing above CMKVolume changes: the volume and
/// FUSE layers see only the protocols of CMKMetadata/MetadataBackend.swift.
///
/// Existential, not generic: `Volume.metadata` is `any MetadataBackend`. The protocols are
/// class-bound, so the existential is one reference plus witness tables (no boxing, no
/// allocation), and a call costs one indirect jump, nanoseconds beside the SQLite statement
/// behind it (microseconds, under the store's lock). Making Volume generic over its store would
/// spread a type parameter through CMKFuse and the CLI for no measurable gain (docs/design-notes.md).
enum MetadataBackends {
    static func databasePath(_ volume: String) -> String { volume + "/meta.db" }

    /// Opens the backend of the volume at `volume` (an absolute path).
    static func open(volume: String) throws(CMKError) -> any MetadataBackend {
        do { return try MetadataStore.open(at: databasePath(volume)) } catch { throw .metadata(error, volume: volume) }
    }

    /// Creates the backend of a new volume; `.exists` if there is one.
    static func create(volume: String) throws(MetadataError) -> any MetadataBackend {
        try MetadataStore.create(at: databasePath(volume))
    }
}
