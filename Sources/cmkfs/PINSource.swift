import Foundation
import CMKCrypto
import CMKSystem
import CMKVolume

/// Where a provider's run-time secret (a PKCS#11 user PIN, a Vault token) comes from, in order:
/// `--pin-file FILE` (alias `--vault-token-file`), the kind's environment variable
/// (`CMKFS_PKCS11_PIN`, `VAULT_TOKEN`), the terminal (echo off). Never argv, never stored in the volume; the
/// mount daemon gets it from `cmkfs mount` through an inherited pipe (`--pin-fd`).
enum PINSource {
    /// The secret, or nil when no source has one (`promptAtTerminal` false, or no terminal).
    static func read(pinFile: String?, promptAtTerminal: Bool, secret: ProviderSecret, config: ProviderConfig) throws(CMKError) -> SecretBytes? {
        if let pinFile { return try fromFile(pinFile, secretName: secret.name) }
        if let value = ProcessInfo.processInfo.environment[secret.environmentVariable], !value.isEmpty {
            // Taken out of the environment at once, so no child (the mount daemon, which lives
            // for days) inherits it where /proc/PID/environ would show it.
            unsetenv(secret.environmentVariable)
            return Array(value.utf8).withUnsafeBytes { SecretBytes(copying: $0) }
        }
        return promptAtTerminal ? fromTerminal(prompt: secret.prompt(config)) : nil
    }

    /// The secret for `volume` when its recorded provider kind needs one; nil for the others.
    static func forVolume(_ volume: String, pinFile: String?, promptAtTerminal: Bool) throws(CMKError) -> SecretBytes? {
        guard let recorded = try? Volume.recordedProvider(at: volume),
              let secret = ProviderRegistry.kind(named: recorded.kind)?.secret else { return nil }
        return try read(pinFile: pinFile, promptAtTerminal: promptAtTerminal, secret: secret, config: recorded)
    }

    /// Everything up to the first newline of `path` (the usual PIN-file and token-file shape).
    /// `secretName`: what messages call it ("PIN", "token").
    static func fromFile(_ path: String, secretName: String = "PIN") throws(CMKError) -> SecretBytes {
        let what = secretName == "PIN" ? "the token's user PIN" : "the \(secretName)"
        let file: FileDescriptor
        do { file = try FileDescriptor.open(path, O_RDONLY | O_CLOEXEC) } catch {
            throw CMKError(.keyUnavailable, "cannot read the \(secretName) file \(path): \(error.errno)",
                           hint: "write \(what) into a file only you can read (chmod 600) and pass it as --\(secretName == "PIN" ? "pin" : "vault-token")-file")
        }
        try checkMode(file.descriptor, path, secretName: secretName)
        guard let pin = fromDescriptor(file.descriptor) else {
            throw CMKError(.keyUnavailable, "the \(secretName) file \(path) is empty", hint: "write \(what) into it")
        }
        return pin
    }

    /// A secret file other users can read exposes the secret: refused. One they can only
    /// write is warned about (they could change the secret cmkfs sends, not learn it).
    static func checkMode(_ fd: Descriptor, _ path: String, secretName: String = "PIN") throws(CMKError) {
        guard let st = try? fd.fstat() else { return }
        let mode = st.st_mode & 0o7777
        let shown = String(mode, radix: 8)
        if mode & 0o044 != 0 {
            throw CMKError(.keyUnavailable, "the \(secretName) file \(path) is readable by other users (mode 0\(shown)): it exposes the \(secretName == "PIN" ? "token's PIN" : secretName)",
                           hint: "chmod 600 \(path), and \(secretName == "PIN" ? "change the token's PIN" : "revoke the \(secretName) and make a new one") if others may have read it")
        }
        if mode & 0o022 != 0 {
            FileHandle.standardError.write(Data("cmkfs: warning: the \(secretName) file \(path) is writable by other users (mode 0\(shown)); chmod 600 \(path)\n".utf8))
        }
    }

    /// Reads a PIN line from `fd` (a file or the pipe from `cmkfs mount`); nil when empty.
    static func fromDescriptor(_ fd: Descriptor) -> SecretBytes? {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1024, alignment: 16)
        defer { secureZero(buffer); buffer.deallocate() }
        var count = 0
        while count < buffer.count {
            guard let n = try? fd.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[count...])), n > 0 else { break }
            count += n
        }
        if let newline = buffer[0..<count].firstIndex(of: 0x0A) { count = newline }
        if count > 0 && buffer[count - 1] == 0x0D { count -= 1 }
        guard count > 0 else { return nil }
        return SecretBytes(copying: UnsafeRawBufferPointer(rebasing: buffer[0..<count]))
    }

    /// Prompts on /dev/tty with echo off; nil without a terminal.
    static func fromTerminal(prompt: String) -> SecretBytes? {
        guard let terminal = try? FileDescriptor.open("/dev/tty", O_RDWR | O_CLOEXEC) else { return nil }
        let tty = terminal.descriptor
        return tty.withEchoOff { () -> SecretBytes? in
            defer { try? tty.writeAll([0x0A]) }
            try? tty.writeAll(Array(prompt.utf8))
            return fromLine(tty)
        } ?? nil
    }

    /// One line from a terminal, byte by byte (a tty read returns at most a line anyway).
    private static func fromLine(_ fd: Descriptor) -> SecretBytes? {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1024, alignment: 16)
        defer { secureZero(buffer); buffer.deallocate() }
        var count = 0
        while count < buffer.count {
            guard let n = try? fd.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[count..<(count + 1)])),
                  n > 0, buffer[count] != 0x0A else { break }
            count += 1
        }
        guard count > 0 else { return nil }
        return SecretBytes(copying: UnsafeRawBufferPointer(rebasing: buffer[0..<count]))
    }
}
