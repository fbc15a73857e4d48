import Foundation
import Synchronization
import CMKHTTP
import CMKKeys

extension VaultTransitProvider: BatchRewrapping {
    /// EDEKs per `rewrap` request, and requests in flight at once: enough to keep a server's
    /// cores busy while one request's answer travels. Vault refuses a JSON body of more than
    /// 1,000 strings by default (`max_request_json_strings`); an item has four.
    static let rewrapChunk = 200
    static let rewrapWidth = 8

    /// `POST <mount>/rewrap/<key>` with `batch_input` and `key_version`, in chunks sent from
    /// several threads over pooled keep-alive connections. Vault decrypts and re-encrypts inside
    /// the server: no DEK crosses the network.
    public func rewrap(_ items: [(edek: [UInt8], context: WrapContext)], from: KeyRef, to: KeyRef) throws(KeyProviderError) -> [[UInt8]?] {
        guard !items.isEmpty else { return [] }
        let chunks = stride(from: 0, to: items.count, by: Self.rewrapChunk).map { $0..<min($0 + Self.rewrapChunk, items.count) }
        let results = Mutex([[UInt8]?](repeating: nil, count: items.count))
        let failure = Mutex<KeyProviderError?>(nil)
        // Sound to share: `self` is Sendable and `items` is read only.
        let work = UncheckedBox(items)
        forEachConcurrently(chunks.count, width: Self.rewrapWidth) { [self] c in
            guard failure.withLock({ $0 == nil }) else { return }
            do throws(KeyProviderError) {
                let out = try rewrapChunk(Array(work.value[chunks[c]]), from: from, to: to)
                results.withLock { all in for (i, edek) in zip(chunks[c], out) { all[i] = edek } }
            } catch {
                failure.withLock { if $0 == nil { $0 = error } }
            }
        }
        if let error = failure.withLock({ $0 }) { throw error }
        return results.withLock { $0 }
    }

    private func rewrapChunk(_ items: [(edek: [UInt8], context: WrapContext)], from: KeyRef, to: KeyRef) throws(KeyProviderError) -> [[UInt8]?] {
        // Only EDEKs that carry `from`'s version are sent; the others cannot be what the row says.
        var sent: [Int] = []
        var input: [[String: Any]] = []
        for (i, item) in items.enumerated() {
            guard VaultTransitProvider.version(of: item.edek) == from.version,
                  let ciphertext = String(validating: item.edek, as: UTF8.self) else { continue }
            sent.append(i)
            input.append(["ciphertext": ciphertext, "context": Self.derivationContext(item.context)])
        }
        var out = [[UInt8]?](repeating: nil, count: items.count)
        guard !input.isEmpty else { return out }
        // The batch's request context (the rotation's), its first file id left out: one request, many files.
        let first = items[sent[0]].context
        let answer = try call(.post, "rewrap/\(to.keyID)", body: VaultClient.json(["batch_input": input, "key_version": to.version]),
                              key: to, op: "rewrap", context: WrapContext(volumeID: first.volumeID, fileID: [], request: first.request))
        guard answer.status == 200, let results = answer.data?["batch_results"] as? [[String: Any]], results.count == sent.count else {
            if answer.status == 200 { throw .unavailable("\(place) answered a rewrap batch of \(sent.count) with another count of results") }
            throw refusal(answer, key: to, doing: "rewrap under \(to)")
        }
        var itemError: String?
        for (i, result) in zip(sent, results) {
            if let ciphertext = result["ciphertext"] as? String, Self.version(of: Array(ciphertext.utf8)) == to.version {
                out[i] = Array(ciphertext.utf8)
            } else if let error = result["error"] as? String, !error.contains("message authentication failed"), !error.contains("invalid ciphertext") {
                itemError = error
            }
        }
        // An item error that is not about its own ciphertext (a version below the minimum, a
        // disabled target) is about the key: the key's state decides, for the whole batch.
        if let itemError {
            for key in [from, to] {
                switch try state(of: key) {
                case .disabled: throw .keyDisabled(key)
                case .destroyed: throw .keyDestroyed(key)
                case .enabled: continue
                }
            }
            throw .unavailable("\(place) refused a rewrap under \(to): \(itemError)")
        }
        return out
    }
}

/// A value shared read-only by the threads of one call.
private final class UncheckedBox<T>: @unchecked Sendable {
    // Sound because `value` is never written after init; the threads only read it, and the
    // call that made the box waits for them before returning.
    let value: T
    init(_ value: T) { self.value = value }
}
