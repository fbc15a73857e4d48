import ArgumentParser
import CMKFormat
import CMKVolume

struct InitCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "init",
        abstract: "Create a new volume with a new master key in the embedded simulated KMS.",
        discussion: """
        VOLUME must be missing or an empty directory. The master key is kept in the KMS keystore \
        directory (--kms-dir, default /var/lib/cmkfs/kms or $CMKFS_KMS_DIR), never in the volume, \
        so copying the volume does not copy the key.
        """
    )

    @Argument(help: "The directory to hold the ciphertext, metadata database and audit log.")
    var volume: String

    @Option(name: .customLong("kms-dir"), help: "The embedded KMS keystore directory.")
    var kmsDir: String = defaultKMSDir

    @Option(name: .customLong("block-size"), help: "Plaintext bytes per encrypted block (power of two, 512…1048576).")
    var blockSize: Int = BlockLayout.defaultBlockSize

    func validate() throws {
        guard blockSize >= 512, blockSize <= 1 << 20, blockSize.nonzeroBitCount == 1 else {
            throw ValidationError("--block-size must be a power of two from 512 to 1048576")
        }
    }

    func run() {
        reporting { () throws(CMKError) in
            let v = try Volume.initialize(at: volume, kmsDir: kmsDir, blockSize: blockSize)
            print("created volume \(v.path)")
            print("  volume id:  \(v.config.volumeID)")
            print("  master key: \(v.activeKey) in the embedded KMS at \(v.config.provider.kmsDir ?? "?")")
            print("mount it with: cmkfs mount \(v.path) MOUNTPOINT")
        }
    }
}
