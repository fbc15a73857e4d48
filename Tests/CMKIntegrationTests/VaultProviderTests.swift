import Foundation
import XCTest
import CMKCrypto
import CMKHTTP
import CMKKeys
import CMKVault

/// What only the Vault transit provider does, against a real OpenBao dev server: derived keys,
/// EDEK shape, the customer's kill switches seen by the provider, tokens, outages, batch rewrap.
final class VaultProviderTests: ProviderTestCase {
    var bao: OpenBaoServer!
    var keyName: String!
    var settings: VaultSettings { VaultSettings(address: bao.address, timeoutMilliseconds: 2000) }

    override func makeProvider() throws -> any KeyProvider {
        bao = try OpenBaoServer.shared.get()
        keyName = "vt-\(UUID().uuidString.prefix(8).lowercased())"
        return try VaultTransitProvider(settings: settings, keyName: keyName, token: OpenBaoServer.secret())
    }

    var vault: VaultTransitProvider { provider as! VaultTransitProvider }
    let ctx = WrapContext(volumeID: Array(repeating: 0xA1, count: 16), fileID: Array(0..<16))

    func testCreateKeyMakesADerivedKeyAndAdoptsIt() throws {
        let key = try vault.createKey()
        XCTAssertEqual(key, KeyRef(keyID: keyName, version: 1))
        let info = try bao.admin(.get, "transit/keys/\(keyName!)")
        XCTAssertEqual((info["data"] as? [String: Any])?["derived"] as? Bool, true)
        _ = try vault.createVersion(of: keyName)
        XCTAssertEqual(try vault.createKey(), KeyRef(keyID: keyName, version: 2), "an existing key is adopted at its newest version")
    }

    func testRefusesAKeyThatIsNotDerived() throws {
        try bao.admin(.post, "transit/keys/\(keyName!)", ["type": "aes256-gcm96"])
        assertRefused("a non-derived key", { if case .unavailable(let why) = $0 { return why.contains("derived=true") }; return false }) {
            _ = try vault.createKey()
        }
    }

    func testTheEDEKIsVaultsCiphertextOfTheVersion() throws {
        let key = try vault.createKey()
        let edek = try vault.wrap(try dek(), with: key, context: ctx)
        XCTAssertTrue(String(decoding: edek, as: UTF8.self).hasPrefix("vault:v1:"))
    }

    func testTheCustomersMinDecryptionVersionIsTheKillSwitch() throws {
        let v1 = try vault.createKey()
        let d = try dek()
        let edek = try vault.wrap(d, with: v1, context: ctx)
        let v2 = try vault.createVersion(of: keyName)
        try bao.admin(.post, "transit/keys/\(keyName!)/config", ["min_decryption_version": 2])
        XCTAssertEqual(try vault.state(of: v1), .disabled)
        XCTAssertEqual(try vault.state(of: v2), .enabled)
        assertRefused("unwrap below min_decryption_version", Self.isDisabled) { _ = try vault.unwrap(edek, with: v1, context: ctx) }
    }

    func testADeletedKeyIsNotFound() throws {
        let key = try vault.createKey()
        let edek = try vault.wrap(try dek(), with: key, context: ctx)
        try bao.admin(.post, "transit/keys/\(keyName!)/config", ["deletion_allowed": true])
        try bao.admin(.delete, "transit/keys/\(keyName!)")
        assertRefused("state of a deleted key", Self.isNotFound) { _ = try vault.state(of: key) }
        assertRefused("unwrap under a deleted key", Self.isNotFound) { _ = try vault.unwrap(edek, with: key, context: ctx) }
    }

    func testARevokedTokenIsAccessDenied() throws {
        let key = try vault.createKey()
        let token = try bao.volumeToken(key: keyName)
        let limited = try VaultTransitProvider(settings: settings, keyName: keyName, token: OpenBaoServer.secret(token))
        let d = try dek()
        let edek = try limited.wrap(d, with: key, context: ctx)
        XCTAssertTrue(try limited.unwrap(edek, with: key, context: ctx).constantTimeEquals(d), "the documented policy is enough")
        XCTAssertEqual(try limited.state(of: key), .enabled)
        try bao.admin(.post, "auth/token/revoke", ["token": token])
        assertRefused("unwrap with a revoked token", Self.isDenied) { _ = try limited.unwrap(edek, with: key, context: ctx) }
        assertRefused("state with a revoked token", Self.isDenied) { _ = try limited.state(of: key) }
    }

    func testAWrongTokenIsRefusedAsAccessDeniedNotAsADisabledKey() throws {
        let key = try vault.createKey()
        let wrong = try VaultTransitProvider(settings: settings, keyName: keyName, token: OpenBaoServer.secret("not-a-token"))
        assertRefused("state with a wrong token", {
            guard case .accessDenied(_, let detail) = $0 else { return false }
            return detail.contains("refused the token") && detail.contains("invalid, expired or revoked") && !detail.contains("not-a-token")
        }) { _ = try wrong.state(of: key) }
    }

    /// With a KV v2 mount (the dev server's `secret/`), the audit anchor is kept in Vault,
    /// moves only forward, and a token without the path is refused as such.
    func testTheAuditAnchorLivesInKVAndRefusesARollback() throws {
        let kv = VaultSettings(address: bao.address, timeoutMilliseconds: 2000, kvMount: "secret")
        let anchored = try VaultTransitProvider(settings: kv, keyName: keyName, token: OpenBaoServer.secret())
        let volume = (0..<16).map { _ in UInt8.random(in: 0...255) }
        XCTAssertNil(vault.anchorPlace(volumeID: volume), "no KV mount: no anchor")
        XCTAssertEqual(anchored.anchorPlace(volumeID: volume),
                       "Vault KV secret/cmkfs/audit-anchor/\(volume.map { String(format: "%02x", $0) }.joined()) at \(bao.address)")
        XCTAssertNil(try anchored.auditAnchor(volumeID: volume))
        try anchored.setAuditAnchor([1, 2, 3], seq: 5, volumeID: volume)
        XCTAssertEqual(try anchored.auditAnchor(volumeID: volume), [1, 2, 3])
        try anchored.setAuditAnchor([4], seq: 6, volumeID: volume)
        try anchored.setAuditAnchor([4], seq: 6, volumeID: volume)
        assertRefused("an anchor moved back", { if case .unavailable(let why) = $0 { return why.contains("rollback") }; return false }) {
            try anchored.setAuditAnchor([9], seq: 5, volumeID: volume)
        }
        XCTAssertEqual(try anchored.auditAnchor(volumeID: volume), [4])
        let limited = try VaultTransitProvider(settings: kv, keyName: keyName, token: OpenBaoServer.secret(try bao.volumeToken(key: keyName)))
        assertRefused("a token without the anchor's path", Self.isDenied) { _ = try limited.auditAnchor(volumeID: volume) }
    }

    func testAnUnreachableServerIsUnavailableAtOnce() throws {
        let dead = VaultSettings(address: "http://127.0.0.1:\(OpenBaoServer.freePort())", timeoutMilliseconds: 2000)
        let gone = try VaultTransitProvider(settings: dead, keyName: keyName, token: OpenBaoServer.secret())
        let start = Date()
        assertRefused("an unreachable server", { if case .unavailable(let why) = $0 { return why.contains("cannot connect") }; return false }) {
            _ = try gone.state(of: KeyRef(keyID: keyName, version: 1))
        }
        XCTAssertLessThan(Date().timeIntervalSince(start), 5)
    }

    func testASealedServerIsUnavailable() throws {
        let own = try OpenBaoServer(logPath: scratch + "/bao.log")
        defer { own.stop() }
        let sealed = try VaultTransitProvider(settings: VaultSettings(address: own.address), keyName: keyName, token: OpenBaoServer.secret())
        let key = try sealed.createKey()
        let edek = try sealed.wrap(try dek(), with: key, context: ctx)
        try own.admin(.put, "sys/seal")
        assertRefused("a sealed server", { if case .unavailable(let why) = $0 { return why.contains("503") }; return false }) {
            _ = try sealed.unwrap(edek, with: key, context: ctx)
        }
    }

    func testBadSettingsAreRefusedBeforeAnyRequest() {
        for (address, key) in [("ftp://h", "k"), ("http://h:1", "a/b"), ("http://h:1", "../k"), ("http://h:1?x", "k")] {
            XCTAssertThrowsError(try VaultTransitProvider(settings: VaultSettings(address: address), keyName: key, token: OpenBaoServer.secret()))
        }
    }

    func testBatchRewrapMovesEveryEDEKToTheNewVersionAndFlagsTheBadOnes() throws {
        let v1 = try vault.createKey()
        var items: [(edek: [UInt8], context: WrapContext)] = []
        var deks: [SecretBytes] = []
        for i in 0..<600 {
            let context = WrapContext(volumeID: ctx.volumeID, fileID: withUnsafeBytes(of: UInt64(i).bigEndian, Array.init) + [0, 0, 0, 0, 0, 0, 0, 0])
            let d = try dek()
            deks.append(d)
            items.append((try vault.wrap(d, with: v1, context: context), context))
        }
        items[7].context = ctx  // a row moved to another file
        items[300].edek[12] ^= 1  // a tampered row
        let v2 = try vault.createVersion(of: keyName)
        let out = try vault.rewrap(items, from: v1, to: v2)
        XCTAssertEqual(out.count, 600)
        XCTAssertNil(out[7])
        XCTAssertNil(out[300])
        for i in [0, 1, 299, 301, 599] {
            let edek = try XCTUnwrap(out[i])
            XCTAssertTrue(String(decoding: edek, as: UTF8.self).hasPrefix("vault:v2:"))
            XCTAssertTrue(try vault.unwrap(edek, with: v2, context: items[i].context).constantTimeEquals(deks[i]))
        }
        XCTAssertEqual(out.compactMap { $0 }.count, 598)
    }

    func testRewrapIntoADisabledVersionIsRefusedAsTheKey() throws {
        let v1 = try vault.createKey()
        let edek = try vault.wrap(try dek(), with: v1, context: ctx)
        let v2 = try vault.createVersion(of: keyName)
        try vault.setState(.disabled, of: v1)
        assertRefused("rewrap from a disabled version", Self.isDisabled) { _ = try vault.rewrap([(edek, ctx)], from: v1, to: v2) }
    }

    func testRequestsCarryTheCmkfsContextHeadersForTheAuditDevice() throws {
        let auditLog = scratch + "/audit.log"
        let own = try OpenBaoServer(logPath: scratch + "/bao.log", auditLog: auditLog)
        defer { own.stop() }
        for header in ["x-cmkfs-volume", "x-cmkfs-file", "x-cmkfs-op", "x-cmkfs-request", "x-cmkfs-operation", "x-cmkfs-process", "x-cmkfs-reason"] {
            try own.admin(.put, "sys/config/auditing/request-headers/\(header)", ["hmac": false])
        }
        let p = try VaultTransitProvider(settings: VaultSettings(address: own.address), keyName: keyName, token: OpenBaoServer.secret())
        let key = try p.createKey()
        var request = KeyRequest(operation: "open", uid: 1000, pid: 4242, process: "cat\r\nX-Evil: 1", reason: "ticket 7 ü")
        let context = WrapContext(volumeID: ctx.volumeID, fileID: ctx.fileID, request: request)
        _ = try p.unwrap(try p.wrap(try dek(), with: key, context: context), with: key, context: context)
        let serverID = try XCTUnwrap(request.receipt.serverRequestID, "Vault's request id is left in the receipt")
        request.operation = "open"
        let lines = try String(contentsOfFile: auditLog, encoding: .utf8).split(separator: "\n")
        let unwrap = try XCTUnwrap(lines.last { $0.contains("\"type\":\"request\"") && $0.contains("transit/decrypt/") }.map(String.init))
        XCTAssertTrue(unwrap.contains(serverID), "Vault's audit record has the id cmkfs keeps: \(unwrap)")
        XCTAssertTrue(unwrap.contains(hexString(ctx.fileID)), "the file id")
        XCTAssertTrue(unwrap.contains(hexString(ctx.volumeID)), "the volume id")
        XCTAssertTrue(unwrap.contains("[\"unwrap\"]"), "the operation")
        XCTAssertTrue(unwrap.contains("[\"\(request.id)\"]"), "cmkfs' own request id")
        XCTAssertTrue(unwrap.contains("cat%0D%0AX-Evil%3A%201"), "a hostile process name is encoded, not a header of its own")
        XCTAssertFalse(unwrap.contains("x-evil"))
        XCTAssertTrue(unwrap.contains("ticket%207%20%C3%BC"), "the reason")
    }

    private func hexString(_ b: [UInt8]) -> String { b.map { String(format: "%02x", $0) }.joined() }
}
