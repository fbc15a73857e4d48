import Foundation
import CMKCrypto

/// An AWS access key: the id (not secret, it names the key in CloudTrail), the secret access key
/// (in `SecretBytes`, never printed) and, for temporary credentials, the session token.
public struct AWSCredentials: Sendable, CustomStringConvertible {
    public let accessKeyID: String
    public let secretAccessKey: SecretBytes
    public let sessionToken: String?
    /// Where they came from, for messages ("the environment", "profile 'x' in ~/.aws/credentials").
    public let source: String

    public init(accessKeyID: String, secretAccessKey: SecretBytes, sessionToken: String? = nil, source: String) {
        self.accessKeyID = accessKeyID
        self.secretAccessKey = secretAccessKey
        self.sessionToken = sessionToken
        self.source = source
    }

    public var description: String { "AWS access key \(accessKeyID) from \(source) (secret redacted)" }
}

/// Why no credentials could be had; names the places looked at, never a secret.
public struct AWSCredentialsError: Error, Sendable, CustomStringConvertible {
    public let message: String
    public var description: String { message }
    public static let hint = "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary credentials), "
        + "or put them in ~/.aws/credentials and name the profile with --aws-profile or AWS_PROFILE"
}

/// The standard credential chain, as the AWS CLI and SDKs read it (without instance metadata,
/// which this machine cannot reach): a profile named explicitly (`--aws-profile`) is read from the
/// shared files; otherwise the environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_SESSION_TOKEN`) wins, then the profile `AWS_PROFILE` (default "default") in
/// `AWS_SHARED_CREDENTIALS_FILE` (~/.aws/credentials), then in `AWS_CONFIG_FILE` (~/.aws/config).
/// Credentials are never taken from the command line.
public enum AWSCredentialChain {
    public static func resolve(profile explicit: String? = nil,
                               environment: [String: String] = ProcessInfo.processInfo.environment) throws(AWSCredentialsError) -> AWSCredentials {
        if explicit == nil, let id = environment["AWS_ACCESS_KEY_ID"], !id.isEmpty,
           let secret = environment["AWS_SECRET_ACCESS_KEY"], !secret.isEmpty {
            let token = environment["AWS_SESSION_TOKEN"].flatMap { $0.isEmpty ? nil : $0 }
            return AWSCredentials(accessKeyID: id, secretAccessKey: secretBytes(Array(secret.utf8)), sessionToken: token,
                                  source: "the environment (AWS_ACCESS_KEY_ID)")
        }
        let profile = explicit ?? environment["AWS_PROFILE"].flatMap { $0.isEmpty ? nil : $0 } ?? "default"
        let home = environment["HOME"] ?? NSHomeDirectory()
        let credentialsFile = environment["AWS_SHARED_CREDENTIALS_FILE"] ?? home + "/.aws/credentials"
        let configFile = environment["AWS_CONFIG_FILE"] ?? home + "/.aws/config"
        var looked: [String] = []
        for (file, section) in [(credentialsFile, profile), (configFile, profile == "default" ? "default" : "profile " + profile)] {
            looked.append("[\(section)] in \(file)")
            guard var bytes = FileManager.default.contents(atPath: file).map(Array.init) else { continue }
            defer { bytes.withUnsafeMutableBytes { secureZero($0) } }
            if let found = parse(bytes, section: section, source: "profile '\(profile)' in \(file)") { return found }
        }
        let envNote = explicit == nil ? "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY are not set; " : ""
        throw AWSCredentialsError(message: "no AWS credentials: \(envNote)no aws_access_key_id and aws_secret_access_key under \(looked.joined(separator: " or "))")
    }

    /// The keys of `[section]` in an INI file. The secret goes from the file's bytes straight into
    /// `SecretBytes`; the caller wipes the file's bytes.
    static func parse(_ bytes: [UInt8], section: String, source: String) -> AWSCredentials? {
        var inSection = false
        var id: String?, token: String?, secret: SecretBytes?
        for rawLine in bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: true) {
            let line = strip(rawLine)
            guard let first = line.first, first != UInt8(ascii: "#"), first != UInt8(ascii: ";") else { continue }
            if first == UInt8(ascii: "["), line.last == UInt8(ascii: "]") {
                let name = String(decoding: strip(line.dropFirst().dropLast()), as: UTF8.self)
                inSection = name.split(separator: " ", omittingEmptySubsequences: true).joined(separator: " ") == section
                continue
            }
            guard inSection, let eq = line.firstIndex(of: UInt8(ascii: "=")) else { continue }
            let key = String(decoding: strip(line[..<eq]), as: UTF8.self).lowercased()
            let value = strip(line[(eq + 1)...])
            switch key {
            case "aws_access_key_id": id = String(decoding: value, as: UTF8.self)
            case "aws_secret_access_key" where !value.isEmpty: secret = secretBytes(Array(value))
            case "aws_session_token": token = String(decoding: value, as: UTF8.self)
            default: break
            }
        }
        guard let id, !id.isEmpty, let secret else { return nil }
        return AWSCredentials(accessKeyID: id, secretAccessKey: secret, sessionToken: token, source: source)
    }

    private static func strip(_ s: ArraySlice<UInt8>) -> ArraySlice<UInt8> {
        var s = s
        while let c = s.first, c == 0x20 || c == 0x09 || c == 0x0D { s = s.dropFirst() }
        while let c = s.last, c == 0x20 || c == 0x09 || c == 0x0D { s = s.dropLast() }
        return s
    }

    private static func secretBytes(_ bytes: [UInt8]) -> SecretBytes {
        var copy = bytes
        defer { copy.withUnsafeMutableBytes { secureZero($0) } }
        return copy.withUnsafeBytes { SecretBytes(copying: $0) }
    }
}
