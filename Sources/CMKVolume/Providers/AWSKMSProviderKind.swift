import Foundation
import CMKAWSKMS
import CMKKeys
import CMKHTTP

extension ProviderKind {
    /// A key in AWS KMS (or a server speaking its JSON API), reached over HTTPS with Signature
    /// Version 4. Credentials come from the standard places at every open, never from argv and
    /// never recorded: the environment, or a profile of the shared credentials/config files.
    public static let awsKMS = ProviderKind(
        name: "aws-kms",
        initHelp: "--kms aws-kms: --aws-key-id ID|ARN|alias/NAME --aws-region REGION [--aws-endpoint URL] [--aws-profile NAME]; "
            + "credentials from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/AWS_SESSION_TOKEN or the profile (--aws-profile, AWS_PROFILE) "
            + "in ~/.aws/credentials or ~/.aws/config.",
        flags: [
            ProviderFlag("--aws-key-id", valueName: "KEY", help: "aws-kms: the KMS key (key id, key ARN or alias/NAME); it must exist and be enabled.",
                         target: .keyID, required: true),
            ProviderFlag("--aws-region", valueName: "REGION", help: "aws-kms: the key's AWS region (e.g. eu-west-1).",
                         target: .setting("aws_region"), required: true,
                         check: { $0.range(of: "^[a-z0-9-]+$", options: .regularExpression) == nil ? "--aws-region must look like eu-west-1" : nil }),
            ProviderFlag("--aws-endpoint", valueName: "URL", help: "aws-kms: the KMS endpoint (default https://kms.REGION.amazonaws.com).",
                         target: .setting("aws_endpoint"),
                         check: { $0.hasPrefix("https://") || $0.hasPrefix("http://") ? nil : "--aws-endpoint must be an http:// or https:// URL" }),
            ProviderFlag("--aws-profile", valueName: "NAME", help: "aws-kms: the credentials profile (else $AWS_PROFILE, else the environment's keys or 'default').",
                         target: .setting("aws_profile")),
        ],
        rotationParallelism: .fixed(16),
        build: { config, context throws(CMKError) in
            guard let region = config["aws_region"] else {
                throw CMKError(.notAVolume, "\(context.volume) uses AWS KMS but records no aws_region")
            }
            let credentials: AWSCredentials
            do throws(AWSCredentialsError) { credentials = try AWSCredentialChain.resolve(profile: config["aws_profile"]) } catch {
                var refused = CMKError(.keyUnavailable, "\(error) (needed by \(context.volume))", hint: AWSCredentialsError.hint)
                refused.reason = "credentials"
                throw refused
            }
            let timeout = socketTimeoutMilliseconds
            let client = HTTPClient(configuration: .init(connectTimeoutMilliseconds: min(timeout, 3000), totalTimeoutMilliseconds: timeout))
            do throws(KeyProviderError) {
                return try AWSKMSProvider(region: region, endpoint: config["aws_endpoint"], credentials: credentials,
                                          transport: HTTPKMSTransport(client: client))
            } catch {
                throw CMKError(.usage, "\(context.volume): \(error)")
            }
        },
        place: { "AWS KMS (\(awsEndpoint($0)))" },
        initDescription: { "AWS KMS in \($0["aws_region"] ?? "?") (\(awsEndpoint($0)))" },
        statusDetail: { " \(awsEndpoint($0))" },
        hints: { config in
            let region = config["aws_region"] ?? "REGION"
            return ProviderHints(
                notFound: "check the key id, ARN or alias and the region: aws kms describe-key --key-id \(config.keyID) --region \(region)",
                disabled: "the key owner disabled the key, scheduled its deletion, or withdrew kms:Decrypt/kms:Encrypt from this principal "
                    + "(aws kms describe-key --key-id \(config.keyID) --region \(region)); they must enable it, cancel the deletion, or grant access again",
                denied: "the key owner withdrew this principal's kms:Decrypt/kms:Encrypt/kms:DescribeKey (key policy, IAM policy or grant), "
                    + "or these are not the credentials meant for \(config.keyID): check with aws sts get-caller-identity",
                unavailable: "check the network path to \(awsEndpoint(config)), the credentials (AWS_ACCESS_KEY_ID or the profile) and the region")
        }
    )

    static func awsEndpoint(_ config: ProviderConfig) -> String {
        config["aws_endpoint"] ?? "https://kms.\(config["aws_region"] ?? "?").amazonaws.com"
    }
}
