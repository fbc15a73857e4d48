import Foundation
import Glibc
import CMKCrypto
import CMKFormat
import CMKKeys
import CMKMetadata
import CMKSystem

/// The journal entry of one rekey, `meta['rekey:<file id hex>']`: written (and made durable)
/// only once the re-encrypted copy is complete and fsynced, removed in the transaction that
/// installs the new key. While it exists, the backing file may be a mix of old and new blocks;
/// redoing the copy from `temp` and installing the key finishes the switch.
struct RekeyJournal: Codable {
    /// The backing file, relative to `data/`.
    var path: String
    /// The re-encrypted copy, relative to the volume directory.
    var temp: String
    /// The new DEK's EDEK (hex) and the master-key version that wrapped it.
    var edek: String
    var keyID: String
    var version: Int
    /// User xattr values re-sealed under the new DEK, as (name, value hex) pairs: a list, not a
    /// dictionary, because a `String` key follows Unicode canonical equivalence and would make
    /// two xattrs whose names differ only in normalization one (their bytes differ, so they are two).
    var xattrs: [Resealed]

    struct Resealed: Codable, Equatable {
        var name: String
        var value: String
    }

    static let prefix = "rekey:"

    enum CodingKeys: String, CodingKey { case path, temp, edek, keyID = "key_id", version, xattrs }
}

extension RekeyJournal {
    /// Reads the list, or the name → hex object that versions before it wrote (a journal left
    /// by a crash is finished by whichever version mounts next).
    init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        path = try c.decode(String.self, forKey: .path)
        temp = try c.decode(String.self, forKey: .temp)
        edek = try c.decode(String.self, forKey: .edek)
        keyID = try c.decode(String.self, forKey: .keyID)
        version = try c.decode(Int.self, forKey: .version)
        if let list = try? c.decode([Resealed].self, forKey: .xattrs) {
            xattrs = list
        } else {
            xattrs = try c.decode([String: String].self, forKey: .xattrs).map { Resealed(name: $0.key, value: $0.value) }
        }
    }
}

/// A rekey's new DEK and its EDEK, wrapped before the file is locked (`Volume.prepareRekey`).
public struct PreparedRekey: Sendable {
    let key: SecretBytes
    let edek: [UInt8]
    let ref: KeyRef
}

extension Volume {
    /// `VOLUME/rekey/`: the re-encrypted copies of files being rekeyed (outside `data/`, so the
    /// mount never shows them).
    public var rekeyDirectory: String { path + "/rekey" }

    /// Re-encrypts the regular file open at `fd` (backing path `relativePath` under `data/`)
    /// under a fresh DEK wrapped by the active master key; returns the new DEK and its version.
    ///
    /// The caller guarantees nothing else reads or writes the file meanwhile (the mount holds
    /// the file's content lock; a command on an unmounted volume holds the mount lock). The file
    /// keeps its inode, its file id and its plaintext; its blocks are sealed anew:
    /// 1. every block is re-encrypted into `rekey/<file id>.tmp` (holes stay holes), fsynced;
    /// 2. the new EDEK and re-sealed xattrs go into a durable journal entry;
    /// 3. the copy's blocks are written over the file in place, fdatasynced;
    /// 4. one transaction installs the new EDEK and xattrs and drops the journal entry.
    /// A crash before 2 leaves the old file (and a stray copy); after 2, `recoverInterruptedRekeys`
    /// redoes 3 and 4, so the file ends up entirely new — never a mix.
    ///
    /// `prepared` is the new DEK already wrapped (`prepareRekey`), so a mount can make that
    /// provider call before it takes the file's lock; nil prepares it here. `proceed` is asked
    /// before each block: once it says no (the old key was dropped: the kill switch), the rekey
    /// stops with EACCES and the file is left as it was.
    public func rekey(fd: Int32, relativePath: String, fileID: FileID, oldKey: SecretBytes, prepared: PreparedRekey? = nil,
                      proceed: () -> Bool = { true }) throws(FileKeyError) -> (SecretBytes, KeyRef) {
        let ready: PreparedRekey
        if let prepared { ready = prepared } else { ready = try prepareRekey(fileID: fileID) }
        let newKey = ready.key
        let tempName = "rekey/\(fileID).tmp"
        let tempPath = path + "/" + tempName
        try? Descriptor.cwd.mkdir(rekeyDirectory, mode: 0o700)
        let tempFile: FileDescriptor
        do { tempFile = try FileDescriptor.open(tempPath, O_RDWR | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, mode: 0o600) } catch {
            throw Self.systemError("cannot create \(tempPath)", error.errno.rawValue)
        }
        let temp = tempFile.rawValue
        var finished = false
        defer { if !finished { try? Descriptor.cwd.unlink(tempPath) } }

        try reencrypt(from: fd, to: temp, fileID: fileID, oldKey: oldKey, newKey: newKey, proceed: proceed)
        do { try tempFile.descriptor.fsync() } catch { throw Self.systemError("cannot sync \(tempPath)", error.errno.rawValue) }

        var xattrs: [RekeyJournal.Resealed] = []
        do {
            for name in try metadata.xattrNames(fileID: fileID.bytes) {
                guard let sealed = try metadata.xattr(fileID: fileID.bytes, name: name) else { continue }
                let plain = try XattrSeal.open(sealed, name: name, fileID: fileID, key: oldKey)
                xattrs.append(RekeyJournal.Resealed(name: name, value: hex(try plain.withUnsafeBytes { p throws(CryptoError) in try XattrSeal.seal(p, name: name, fileID: fileID, key: newKey) })))
            }
        } catch let error as MetadataError { throw Self.metadataError(error, fileID) } catch let error as CryptoError {
            throw FileKeyError(.crypto(error), "file \(fileID): a user xattr failed authentication: \(error)")
        } catch {
            throw FileKeyError(.unexpected(error), "file \(fileID): a user xattr failed authentication: \(error)")
        }
        var ref = ready.ref
        let edek = ready.edek
        let journalKey = RekeyJournal.prefix + hex(fileID.bytes)
        let journal = RekeyJournal(path: relativePath, temp: tempName, edek: hex(edek), keyID: ref.keyID,
                                   version: ref.version, xattrs: xattrs)
        do {
            try metadata.setMeta(journalKey, Array(try JSONEncoder().encode(journal)))
            try metadata.makeDurable()
        } catch let error as MetadataError { throw Self.metadataError(error, fileID) } catch {
            throw FileKeyError(.unexpected(error), "\(error)")
        }
        // From here on the switch is committed: a failure leaves the journal for recovery.
        finished = true
        try Self.copyBlocks(from: temp, to: fd, layout: layout, fileID: fileID)
        ref = try install(fileID: fileID, journalKey: journalKey, journal: journal, key: newKey)
        try? Descriptor.cwd.unlink(tempPath)
        return (newKey, ref)
    }

    /// A fresh DEK wrapped under the active master key: the one provider call of a rekey (bar a
    /// rotation racing it), made before the file is locked.
    public func prepareRekey(fileID: FileID) throws(FileKeyError) -> PreparedRekey {
        let key: SecretBytes
        do { key = try SecretBytes.random(count: 32) } catch { throw FileKeyError(.crypto(error), "\(error)") }
        let ref = activeKey
        do {
            return PreparedRekey(key: key, edek: try provider.wrap(key, with: ref, context: WrapContext(volumeID: volumeID, fileID: fileID.bytes, request: keyRequest("rekey"))),
                                 ref: ref)
        } catch { throw Self.keyError(error) }
    }

    /// Finishes every rekey a crash interrupted (mount start, `cmkfs rekey`, fsck): redoes the
    /// in-place copy from the fsynced re-encrypted copy and installs the new key. Returns one
    /// line per file recovered.
    public func recoverInterruptedRekeys() throws(CMKError) -> [String] {
        let keys: [String]
        do { keys = try metadata.metaKeys(withPrefix: RekeyJournal.prefix) } catch { throw .metadata(error, volume: path) }
        var done: [String] = []
        // Journals hold backing paths; messages show mount paths (the codec is not kept).
        let codec = keys.isEmpty || !encryptsNames ? nil : try? uncachedNameCodec()
        func shown(_ backing: String) -> String {
            guard encryptsNames else { return backing }
            return (try? mountPath(forBackingPath: backing, codec: codec)).map { String($0.dropFirst()) } ?? backing
        }
        for journalKey in keys {
            guard let raw = try? metadata.meta(journalKey),
                  let journal = try? JSONDecoder().decode(RekeyJournal.self, from: Data(raw)),
                  let idBytes = unhex(String(journalKey.dropFirst(RekeyJournal.prefix.count))),
                  let fileID = FileID(bytes: idBytes) else {
                throw CMKError(.notAVolume, "the rekey journal entry \(journalKey) in \(path)/meta.db is unreadable",
                               hint: "run: cmkfs fsck \(path)")
            }
            guard let file = try? FileDescriptor.open(dataPath + "/" + journal.path, O_RDWR | O_NOFOLLOW | O_CLOEXEC),
                  let copy = try? FileDescriptor.open(path + "/" + journal.temp, O_RDONLY | O_NOFOLLOW | O_CLOEXEC),
                  (try? ContentFile.readFileID(fd: file.rawValue)) == fileID else {
                throw CMKError(.io, "cannot finish the interrupted rekey of \(journal.path) (file \(fileID)): its backing file or re-encrypted copy \(journal.temp) is missing or changed",
                               hint: "run: cmkfs fsck \(path)")
            }
            let fd = file.rawValue, temp = copy.rawValue
            do {
                try Self.copyBlocks(from: temp, to: fd, layout: layout, fileID: fileID)
                let key = try provider.unwrap(unhex(journal.edek) ?? [], with: KeyRef(keyID: journal.keyID, version: journal.version),
                                              context: WrapContext(volumeID: volumeID, fileID: fileID.bytes, request: keyRequest("rekey")))
                _ = try install(fileID: fileID, journalKey: journalKey, journal: journal, key: key)
            } catch let error as FileKeyError {
                throw CMKError(.io, "cannot finish the interrupted rekey of \(journal.path): \(error.description)")
            } catch let error as KeyProviderError {
                throw .provider(error, volume: path, config: config.provider)
            } catch {
                throw CMKError(.internalError, "\(error)")
            }
            try? Descriptor.cwd.unlink(path + "/" + journal.temp)
            done.append("finished the interrupted rekey of \(shown(journal.path)) (file \(fileID))")
        }
        // Copies without a journal entry were cut short before the switch began: their files
        // are untouched, the copies are debris.
        for name in (try? FileManager.default.contentsOfDirectory(atPath: rekeyDirectory)) ?? [] where name.hasSuffix(".tmp") {
            try? Descriptor.cwd.unlink(rekeyDirectory + "/" + name)
            done.append("removed \(name), an unfinished re-encrypted copy (its file was not changed)")
        }
        return done
    }

    /// Stores the journal's EDEK and xattrs as the file's; when a rotation retired the journal's
    /// version meanwhile, wraps `key` again under the active one.
    private func install(fileID: FileID, journalKey: String, journal: RekeyJournal, key: SecretBytes) throws(FileKeyError) -> KeyRef {
        var ref = KeyRef(keyID: journal.keyID, version: journal.version)
        var edek = unhex(journal.edek) ?? []
        let xattrs = journal.xattrs.compactMap { x in unhex(x.value).map { (name: x.name, value: $0) } }
        for _ in 0..<3 {
            do {
                let record = FileKeyRecord(edek: edek, keyId: ref.keyID, keyVersion: ref.version)
                if try metadata.installRekeyedKey(fileID: fileID.bytes, record, xattrs: xattrs, journalKey: journalKey) {
                    try metadata.makeDurable()
                    return ref
                }
                guard let active = try reloadActiveKey() else { break }
                ref = active
            } catch { throw Self.metadataError(error, fileID) }
            do { edek = try provider.wrap(key, with: ref, context: WrapContext(volumeID: volumeID, fileID: fileID.bytes, request: keyRequest("rekey"))) } catch {
                throw Self.keyError(error)
            }
        }
        throw FileKeyError(.missingRow, "file \(fileID): the metadata database names no active master-key version")
    }

    /// Writes the plaintext of `source` (sealed under `oldKey`) into `dest` sealed under
    /// `newKey`, block by block; all-zero (hole) blocks are skipped so holes stay holes.
    private func reencrypt(from source: Int32, to dest: Int32, fileID: FileID, oldKey: SecretBytes, newKey: SecretBytes,
                           proceed: () -> Bool) throws(FileKeyError) {
        let old = ContentFile(fd: source, fileID: fileID, layout: layout)
        let new = ContentFile(fd: dest, fileID: fileID, layout: layout)
        let scratch = ContentScratch(layout: layout)
        let disk = UnsafeMutableRawBufferPointer.allocate(byteCount: layout.diskBlockSize, alignment: 16)
        let plain = UnsafeMutableRawBufferPointer.allocate(byteCount: layout.blockSize, alignment: 16)
        defer {
            secureZero(plain)
            disk.deallocate()
            plain.deallocate()
        }
        do {
            try new.writeHeader()
            let backingSize = try BackingIO.size(source)
            guard let size = layout.plaintextSize(backingSize: backingSize) else {
                throw FileKeyError(.corrupt, "file \(fileID): its backing size \(backingSize) is not a valid encrypted size (torn write?)")
            }
            var written = 0
            let blocks = (size + layout.blockSize - 1) / layout.blockSize
            for index in 0..<blocks {
                guard proceed() else {
                    throw FileKeyError(.keyDropped, "file \(fileID): its data key was dropped (revoked or flushed) during the rekey; the file is unchanged")
                }
                let n = try BackingIO.pread(source, disk.baseAddress!, count: layout.diskBlockSize, offset: layout.diskOffset(ofBlock: index))
                if UnsafeRawBufferPointer(rebasing: disk[0..<n]).allSatisfy({ $0 == 0 }) { continue }
                let got = try old.read(into: plain, at: index * layout.blockSize, size: size, key: oldKey, scratch: scratch)
                written = try new.write(UnsafeRawBufferPointer(rebasing: plain[0..<got]), at: index * layout.blockSize,
                                        size: written, key: newKey, scratch: scratch)
            }
            try BackingIO.ftruncate(dest, backingSize)
        } catch let error as FileKeyError { throw error } catch let error as ContentError {
            throw FileKeyError(.content(error), "file \(fileID): \(error)")
        } catch {
            throw FileKeyError(.unexpected(error), "file \(fileID): \(error)")
        }
    }

    /// Copies every non-hole block of the re-encrypted copy over the file, then syncs it. The
    /// copy has holes exactly where the file has them, so skipping them keeps the file sparse.
    static func copyBlocks(from temp: Int32, to fd: Int32, layout: BlockLayout, fileID: FileID) throws(FileKeyError) {
        let block = layout.diskBlockSize
        let chunk = 64 * block
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk, alignment: 16)
        defer { buffer.deallocate() }
        do {
            let size = try BackingIO.size(temp)
            var offset = FileHeader.size
            while offset < size {
                let n = try BackingIO.pread(temp, buffer.baseAddress!, count: min(chunk, size - offset), offset: offset)
                guard n > 0 else { break }
                // Write each run of non-zero blocks with one pwrite.
                var start = 0
                while start < n {
                    let isHole = { (at: Int) in UnsafeRawBufferPointer(rebasing: buffer[at..<min(at + block, n)]).allSatisfy { $0 == 0 } }
                    if isHole(start) { start += block; continue }
                    var end = start + block
                    while end < n && !isHole(end) { end += block }
                    end = min(end, n)
                    try BackingIO.pwrite(fd, buffer.baseAddress! + start, count: end - start, offset: offset + start)
                    start = end
                }
                offset += n
                // The file is now part new, part old: only the journal can finish it.
                CrashPoint.hit("rekey-mid-copy")
            }
            try BackingIO.ftruncate(fd, size)
        } catch {
            throw FileKeyError(.content(error), "file \(fileID): \(error)")
        }
        do { try Descriptor(rawValue: fd).fdatasync() } catch { throw systemError("file \(fileID): cannot sync", error.errno.rawValue) }
    }

    static func systemError(_ what: String, _ code: Int32) -> FileKeyError {
        FileKeyError(.system(errno: code), "\(what): \(String(cString: strerror(code)))")
    }
}
