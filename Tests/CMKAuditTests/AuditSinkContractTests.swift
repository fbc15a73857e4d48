import Dispatch
import Foundation
import Synchronization
import XCTest
import CMKCrypto
import CMKAudit

/// The audit-sink contract, one parameterised suite: every check runs against each
/// implementation of `AuditSink` through the protocol only. A sink that ships records elsewhere
/// (syslog, a remote collector) is a new case of `ContractSink` whose `read` fetches what arrived.
/// What only the local log does (the MAC chain, segments, checkpoints, the anchor) is tested
/// beside it (AuditChainTests, AuditContinuityTests).
final class AuditSinkContractTests: XCTestCase {
    func testAppendIsRecordedBeforeItReturns() {
        forEachSink { sink, read in
            try sink.append(event("open", n: 1))
            // No sync, no close: what the FUSE layer relies on before it replies.
            XCTAssertEqual(try read().map(\.detail), ["1"])
            try sink.append(event("open", n: 2), durable: true)
            XCTAssertEqual(try read().map(\.detail), ["1", "2"])
        }
    }

    func testFieldsArriveInOrderAsGiven() {
        forEachSink { sink, read in
            let denied = AuditEvent("open", result: "denied", errno: 13, error: "key disabled", fileID: String(repeating: "ab", count: 16),
                                    keyID: "mk", keyVersion: 3, cache: "miss", uid: 1000, gid: 100, pid: 42, process: "cat", detail: "1")
            try sink.append(denied)
            try sink.append(event("key-flush", n: 2))
            try sink.sync()
            let got = try read()
            XCTAssertEqual(got.map(\.event), ["open", "key-flush"])
            XCTAssertEqual(got.first, Received(event: "open", result: "denied", errno: 13, error: "key disabled",
                                               fileID: String(repeating: "ab", count: 16), keyID: "mk", keyVersion: 3,
                                               cache: "miss", uid: 1000, detail: "1"))
        }
    }

    func testSyncAndCloseKeepEverythingAndCloseFailsLaterAppends() {
        forEachSink { sink, read in
            try sink.sync()
            for n in 1...5 { try sink.append(event("open", n: n)) }
            try sink.sync()
            try sink.sync()
            try sink.append(event("unmount", n: 6), durable: true)
            try sink.close()
            XCTAssertEqual(try read().map(\.detail), (1...6).map(String.init))
            // Fail closed: after close nothing is accepted, so no key is used unrecorded.
            XCTAssertThrowsError(try sink.append(event("open", n: 7)))
            XCTAssertEqual(try read().count, 6)
        }
    }

    func testConcurrentAppendsAreEachRecordedOnceAndWhole() {
        forEachSink { sink, read in
            let failures = Mutex<[String]>([])
            DispatchQueue.concurrentPerform(iterations: 4) { thread in
                for n in 0..<50 {
                    do { try sink.append(AuditEvent("open", detail: "\(thread * 100 + n)")) } catch {
                        failures.withLock { $0.append("\(error)") }
                    }
                }
            }
            XCTAssertEqual(failures.withLock { $0 }, [])
            try sink.sync()
            let got = try read().compactMap(\.detail).compactMap(Int.init)
            XCTAssertEqual(got.count, 200)
            XCTAssertEqual(Set(got), Set((0..<4).flatMap { t in (0..<50).map { t * 100 + $0 } }))
        }
    }

    // MARK: Harness

    /// A record as a reader of the sink sees it.
    struct Received: Equatable {
        var event: String
        var result: String
        var errno: Int?
        var error: String?
        var fileID: String?
        var keyID: String?
        var keyVersion: Int?
        var cache: String?
        var uid: Int?
        var detail: String?
    }

    func event(_ name: String, n: Int) -> AuditEvent {
        AuditEvent(name, keyID: "mk", keyVersion: 1, detail: "\(n)")
    }

    /// Runs `check` against a fresh instance of every sink, with a reader of what reached it;
    /// names the sink a failure came from and removes what it made.
    func forEachSink(_ check: (any AuditSink, _ read: () throws -> [Received]) throws -> Void) {
        for kind in ContractSink.allCases {
            let failuresBefore = testRun?.totalFailureCount ?? 0
            let scratch = NSTemporaryDirectory() + "cmkfs-sink-\(UUID().uuidString.prefix(8).lowercased())"
            do {
                try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: false)
                defer { ContractSink.remove(scratch) }
                let (sink, read) = try kind.start(in: scratch)
                defer { try? sink.close() }
                try check(sink, read)
            } catch {
                XCTFail("\(kind.rawValue): \(error)")
            }
            if (testRun?.totalFailureCount ?? 0) > failuresBefore {
                XCTFail("the failures above came from the \(kind.rawValue)")
            }
        }
    }
}

struct ReadFailure: Error { let message: String }

/// The sinks the contract runs against.
enum ContractSink: String, CaseIterable {
    case localLog = "local tamper-evident log"
    /// `--audit-syslog`: the local log plus a copy to a socket nobody listens on (every copy
    /// dropped): the caller must see exactly the local log's behaviour.
    case fanOut = "fan-out (local log + journald copy)"

    /// A fresh sink whose state lives under `scratch`, and a reader of the records it holds.
    func start(in scratch: String) throws -> (any AuditSink, () throws -> [AuditSinkContractTests.Received]) {
        switch self {
        case .fanOut:
            let (log, read) = try ContractSink.localLog.start(in: scratch)
            let sink = AuditFanOut(local: log as! AuditLog, copies: [AuditCopy(transport: .journal, socket: scratch + "/no-journal")])
            // The copy's own drop reports are its records, not the caller's.
            return (sink, { try read().filter { $0.event != AuditCopy.droppedEvent } })
        case .localLog:
            let key = try SecretBytes.random(count: 32)
            let checkpoints = MemoryCheckpoints()
            let directory = scratch + "/audit"
            let log = try AuditLog.open(directory: directory, key: key, volumeID: "00112233445566778899aabbccddeeff",
                                        checkpoints: checkpoints)
            let read = { () throws -> [AuditSinkContractTests.Received] in
                // The local log's reader checks the chain first: records that do not verify were not recorded.
                let segments = AuditSegments.list(directory).map(\.path)
                let report = try AuditVerifier.verify(segments: segments, key: key, checkpoint: nil, allowMissingHead: true)
                if let problem = report.problem { throw ReadFailure(message: problem.description) }
                return try segments.flatMap { try Self.records(in: $0) }
            }
            return (log, read)
        }
    }

    static func records(in segment: String) throws -> [AuditSinkContractTests.Received] {
        let text = try String(contentsOfFile: segment, encoding: .utf8)
        return try text.split(separator: "\n").map { line in
            guard let o = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
                throw CocoaError(.fileReadCorruptFile)
            }
            return .init(event: o["event"] as? String ?? "", result: o["result"] as? String ?? "", errno: o["errno"] as? Int,
                         error: o["error"] as? String, fileID: o["file"] as? String, keyID: o["key"] as? String,
                         keyVersion: o["key_version"] as? Int, cache: o["cache"] as? String, uid: o["uid"] as? Int,
                         detail: o["detail"] as? String)
        }
    }

    /// Removes a scratch directory (segments may be append-only: chattr +a as root).
    static func remove(_ scratch: String) {
        _ = try? Process.run(URL(fileURLWithPath: "/usr/bin/chattr"), arguments: ["-R", "-a", scratch]).waitUntilExit()
        try? FileManager.default.removeItem(atPath: scratch)
    }
}
