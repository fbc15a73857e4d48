import ArgumentParser
import Foundation
import CMKCrypto
import CMKKeys
import CMKSocketKMS

/// `cmkfs-kms`: the simulated customer KMS as its own process, and the customer's key commands.
struct KMSCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cmkfs-kms",
        abstract: "The customer's KMS: serve it on a Unix socket, keys in a keystore directory or a PKCS#11 token, and manage its keys.",
        discussion: """
        Protocol: docs/kms-protocol.md. The keystore format is the embedded KMS's (docs/key-hierarchy.md).

        Example: cmkfs-kms serve --socket /run/cmkfs-kms.sock --kms-dir /var/lib/cmkfs-kms
        """,
        version: kmsVersion,
        subcommands: [ServeCommand.self, KeyCommand.self, AuditCommand.self]
    )
}

/// The release, the same as `cmkfs --version` (the two are built and installed together).
let kmsVersion = "0.1.0"

/// Prints `cmkfs-kms: error: …` (and a hint) on stderr and exits with `code`.
func fail(_ message: String, hint: String? = nil, code: Int32 = 5) -> Never {
    var text = "cmkfs-kms: error: \(message)\n"
    if let hint { text += "cmkfs-kms: hint: \(hint)\n" }
    FileHandle.standardError.write(Data(text.utf8))
    exit(code)
}

/// Opens the keystore, refusing modes that expose a key (KeystoreModes) and a keystore inside a
/// cmkfs volume; warns on loose modes.
func openKeystore(_ dir: String, create: Bool) -> SimulatedKMS {
    if let volume = KeystorePlacement.enclosingVolume(of: dir) {
        fail("the keystore \(dir) is inside the cmkfs volume \(volume): every copy of the volume would carry the master key",
             hint: "keep the KMS state outside every volume", code: 13)
    }
    let kms: SimulatedKMS
    do { kms = try SimulatedKMS(directory: dir, create: create) } catch {
        fail("\(error)", hint: "create one with: cmkfs-kms key create --kms-dir \(dir)")
    }
    do {
        for warning in try KeystoreModes.check(dir) {
            FileHandle.standardError.write(Data("cmkfs-kms: warning: \(warning)\n".utf8))
        }
    } catch {
        fail("refusing \(error.description)", hint: error.fix)
    }
    return kms
}

struct ServeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve the keystore on a Unix socket (mode 0600; callers must be root or the socket owner).",
        discussion: "Example: cmkfs-kms serve --socket /run/cmkfs-kms.sock --kms-dir /var/lib/cmkfs-kms")

    @Option(help: "The socket path to listen on.") var socket: String
    @OptionGroup var keys: KeyStoreOptions
    @Option(name: .customLong("latency-ms"), help: "Fault injection: delay every answer by N ms.") var latencyMs = 0
    @Option(name: .customLong("fail-fraction"), help: "Fault injection: fail this share (0…1) of requests.") var failFraction = 0.0
    @Flag(name: .customLong("refuse-all"), help: "Fault injection: refuse every request.") var refuseAll = false
    @Option(name: .customLong("audit-log"),
            help: "Record every request answered in this file (JSON lines, fsync'd before each answer); default DIR/kms-audit.log of --kms-dir.")
    var auditLog: String?

    func validate() throws {
        guard latencyMs >= 0, (0...1).contains(failFraction) else {
            throw ValidationError("--latency-ms must be >= 0 and --fail-fraction within 0…1")
        }
        guard keys.state != nil || (keys.usesToken && auditLog != nil) else {
            throw ValidationError("give --kms-dir DIR (the keystore; with a token, where the audit log goes) or, with a token, --audit-log FILE")
        }
    }

    func run() {
        // Master keys pass through this process for each wrap and unwrap, DEKs for each answer:
        // no core file, no ptrace or /proc/PID/mem without CAP_SYS_PTRACE.
        let dump = SecretMemory.forbidCoreDumps()
        if dump != 0 { FileHandle.standardError.write(Data("cmkfs-kms: warning: cannot make the server non-dumpable: \(String(cString: strerror(dump)))\n".utf8)) }
        let kms = keys.open(create: true)
        // Signals are taken by one thread with sigwait, so the socket file is removed on exit.
        var set = sigset_t()
        sigemptyset(&set)
        for s in [SIGTERM, SIGINT, SIGHUP] { sigaddset(&set, s) }
        pthread_sigmask(SIG_BLOCK, &set, nil)
        let audit: KMSAuditLog
        do { audit = try KMSAuditLog(path: auditLog ?? (keys.state! + "/" + KMSPaths.auditLogName)) } catch {
            fail(error.description, hint: "give a writable --audit-log FILE", code: 1)
        }
        let server: KMSServer
        do {
            server = try KMSServer(socketPath: socket, kms: kms,
                                   faults: .init(latencyMilliseconds: latencyMs, failFraction: failFraction, refuseAll: refuseAll),
                                   audit: audit)
        } catch {
            fail(error.description, hint: "choose another --socket, or stop the KMS serving it", code: 1)
        }
        let signals = set
        Thread {
            var signals = signals
            var received: Int32 = 0
            sigwait(&signals, &received)
            server.removeSocket()
            Glibc.exit(0)
        }.start()
        FileHandle.standardOutput.write(Data("cmkfs-kms: serving \(keys.place) on \(socket); audit log \(audit.path)\n".utf8))
        server.run()
    }
}

struct KeyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "key", abstract: "The customer's side: create, list, rotate, disable, enable, destroy master keys.",
        discussion: "Example: cmkfs-kms key list --kms-dir /var/lib/cmkfs-kms --json",
        subcommands: [Create.self, List.self, Rotate.self, Disable.self, Enable.self, Destroy.self])

    struct Create: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a new master key (version 1), or a new version of KEY_ID.",
            discussion: "Example: cmkfs-kms key create --kms-dir /var/lib/cmkfs-kms")
        @OptionGroup var keys: KeyStoreOptions
        @Option(name: .customLong("new-version-of"), help: "Add a version to this key instead.") var keyID: String?
        func run() {
            let kms = keys.open(create: true)
            do {
                let key = try keyID.map { id throws(KeyProviderError) in try kms.createVersion(of: id) } ?? kms.createKey()
                print("\(key.keyID) v\(key.version)")
            } catch { fail("\(error)") }
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List keys and the state of each version.",
            discussion: "Example: cmkfs-kms key list --kms-dir /var/lib/cmkfs-kms --json")
        @OptionGroup var keys: KeyStoreOptions
        @Flag(help: "Print JSON (docs/json.md): format, keys [{key_id, versions [{version, state}]}].") var json = false
        func run() {
            do {
                let listing = try keys.list()
                if json {
                    printJSON(KeyListing(format: 1, keys: listing.map {
                        .init(keyID: $0.keyID, versions: $0.versions.map { .init(version: $0.version, state: $0.state.rawValue) })
                    }))
                    return
                }
                for key in listing {
                    print(key.keyID + " " + key.versions.map { "v\($0.version)=\($0.state.rawValue)" }.joined(separator: " "))
                }
            } catch { fail("\(error)") }
        }

        /// `key list --json`, versioned like every cmkfs JSON output.
        struct KeyListing: Encodable {
            struct Key: Encodable {
                struct Version: Encodable { let version: Int; let state: String }
                let keyID: String
                let versions: [Version]
                enum CodingKeys: String, CodingKey { case keyID = "key_id", versions }
            }
            let format: Int
            let keys: [Key]
        }
    }

    struct Rotate: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create the next version of KEY_ID (the volumes move to it with cmkfs key rotate; older versions stay usable).",
            discussion: "Example: cmkfs-kms key rotate mk-0123 --kms-dir /var/lib/cmkfs-kms")
        @Argument(help: "The key id.") var keyID: String
        @OptionGroup var keys: KeyStoreOptions
        func run() {
            do {
                let key = try keys.open(create: false).createVersion(of: keyID)
                print("\(key.keyID) v\(key.version)")
            } catch { fail("\(error)") }
        }
    }

    struct Disable: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Disable a key (every version unless --version).",
            discussion: "Example: cmkfs-kms key disable mk-0123 --kms-dir /var/lib/cmkfs-kms")
        @Argument(help: "The key id.") var keyID: String
        @Option(help: "Only this version.") var version: Int?
        @OptionGroup var keys: KeyStoreOptions
        func run() { change(keyID, version, to: .disabled, keys) }
    }

    struct Enable: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Enable a disabled key (every version unless --version).",
            discussion: "Example: cmkfs-kms key enable mk-0123 --kms-dir /var/lib/cmkfs-kms")
        @Argument(help: "The key id.") var keyID: String
        @Option(help: "Only this version.") var version: Int?
        @OptionGroup var keys: KeyStoreOptions
        func run() { change(keyID, version, to: .enabled, keys) }
    }

    struct Destroy: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Destroy a key for good (every version unless --version); needs --force.",
            discussion: "Example: cmkfs-kms key destroy mk-0123 --version 1 --kms-dir /var/lib/cmkfs-kms --force")
        @Argument(help: "The key id.") var keyID: String
        @Option(help: "Only this version.") var version: Int?
        @OptionGroup var keys: KeyStoreOptions
        @Flag(help: "Confirm: everything wrapped under the key becomes unreadable forever.") var force = false
        func run() {
            guard force else { fail("destroying \(keyID) makes every file under it unreadable forever", hint: "add --force", code: 64) }
            change(keyID, version, to: .destroyed, keys)
        }
    }
}

/// Sets `keyID` (one version, or all that are not destroyed) to `target`.
func change(_ keyID: String, _ version: Int?, to target: ProviderKeyState, _ keys: KeyStoreOptions) {
    let kms = keys.open(create: false)
    do {
        let versions: [Int]
        if let version { versions = [version] } else {
            guard let listing = try keys.list().first(where: { $0.keyID == keyID }) else {
                throw KeyProviderError.keyNotFound(KeyRef(keyID: keyID, version: 1), detail: "no such key in \(keys.place)")
            }
            versions = listing.versions.filter { $0.state != .destroyed || target == .destroyed }.map(\.version)
        }
        for v in versions {
            try kms.setState(target, of: KeyRef(keyID: keyID, version: v))
            print("\(keyID) v\(v) \(target.rawValue)")
        }
    } catch let error as KeyProviderError {
        fail("\(error)")
    } catch { fail("\(error)") }
}

/// Prints `value` as pretty JSON with sorted keys, as `cmkfs` prints its JSON.
func printJSON<T: Encodable>(_ value: T) {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    print(String(decoding: (try? encoder.encode(value)) ?? Data(), as: UTF8.self))
}
