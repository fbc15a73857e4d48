import Foundation
import Glibc
import CMKKeyService
import CMKMetrics
import CMKSystem

/// The mount's metrics (`cmkfs metrics`, `--metrics-textfile`): the process's counters
/// (`Metrics.shared`) and what the key cache counts itself, in Prometheus' text format.
extension FileSystem {
    /// A key-service event counted: renewals confirmed and renewals that could not reach the provider.
    static func countKeyEvent(_ event: KeyCacheEvent) {
        switch event {
        case .renewed: Metrics.shared.leaseRenewals.add()
        case .renewFailed: Metrics.shared.leaseRenewalFailures.add()
        case .flushed, .relabelled, .expired: break
        }
    }

    /// Everything `cmkfs metrics` prints, as of now.
    public func metricsText() -> String {
        var out = PrometheusText()
        let s = cache.stats()
        out.family("cmkfs_key_cache_hits_total", "Data-key lookups served from the key cache.", type: .counter)
        out.sample("cmkfs_key_cache_hits_total", [:], UInt64(s.hits))
        out.family("cmkfs_key_cache_misses_total", "Data keys not found in the cache: unwrapped through the provider, or a new file's key.", type: .counter)
        out.sample("cmkfs_key_cache_misses_total", [:], UInt64(s.misses))
        out.family("cmkfs_key_cache_evictions_total", "Cached data keys dropped as idle or over capacity.", type: .counter)
        out.sample("cmkfs_key_cache_evictions_total", [:], UInt64(s.evictions))
        out.family("cmkfs_key_cache_flushed_total", "Cached data keys dropped by a flush (kill switch, revocation, refused renewal).", type: .counter)
        out.sample("cmkfs_key_cache_flushed_total", [:], UInt64(s.flushed))
        out.family("cmkfs_key_cache_expired_total", "Cached data keys whose lease ran out unrenewed.", type: .counter)
        out.sample("cmkfs_key_cache_expired_total", [:], UInt64(s.expired))
        out.family("cmkfs_key_cache_entries", "Data keys in the cache now.", type: .gauge)
        out.sample("cmkfs_key_cache_entries", [:], UInt64(s.entries))
        out.family("cmkfs_open_files", "Files open through the mount now.", type: .gauge)
        out.sample("cmkfs_open_files", [:], UInt64(openFileCount))
        out.family("cmkfs_provider_up", "1 when the last lease renewal reached the provider (or none was due yet), else 0.", type: .gauge)
        out.sample("cmkfs_provider_up", [:], UInt64(s.provider.state == "unreachable" ? 0 : 1))
        if let names {
            out.family("cmkfs_name_key_cached", "1 when the name key is held (encrypted names), else 0.", type: .gauge)
            out.sample("cmkfs_name_key_cached", [:], UInt64(names.isKeyCached ? 1 : 0))
            out.family("cmkfs_recent_names", "Plaintext names kept with their backing names for the next operation on them (dropped when the name key goes).", type: .gauge)
            out.sample("cmkfs_recent_names", [:], UInt64(names.recentNameCount))
        }
        out.family("cmkfs_key_row_batches_total", "Transactions that deleted the key rows of unlinked files (batched, PendingForgets).", type: .counter)
        out.sample("cmkfs_key_row_batches_total", [:], UInt64(forgets.batches))
        out.family("cmkfs_audit_noted_names", "Inodes holding a plaintext name noted for audit paths (dropped when the name key goes).", type: .gauge)
        out.sample("cmkfs_audit_noted_names", [:], UInt64(auditNames.notedCount(inodes.all)))
        let t = transport.snapshot
        out.family("cmkfs_fuse_requests_total", "FUSE requests served, by transport (/dev/fuse or io_uring rings).", type: .counter)
        out.sample("cmkfs_fuse_requests_total", ["transport": "dev-fuse"], t.deviceRequests)
        out.sample("cmkfs_fuse_requests_total", ["transport": "io_uring"], t.ringRequests)
        out.family("cmkfs_fuse_ring_threads", "Threads serving a FUSE-over-io_uring ring entry now.", type: .gauge)
        out.sample("cmkfs_fuse_ring_threads", [:], UInt64(t.ringThreads))
        Metrics.shared.render(into: &out)
        return out.text
    }
}

/// Writes the mount's metrics to a file for node_exporter's textfile collector, every
/// `interval` seconds, atomically (a temporary file in the same directory, then rename(2)), so
/// the collector never reads half a file. The file is removed when the mount stops, so a
/// collector stops reporting a mount that is gone rather than its last values.
public final class MetricsTextfile: Sendable {
    public let path: String
    public let interval: Double
    private let render: @Sendable () -> String
    private let stop = DispatchSemaphore(value: 0)
    private let stopped = DispatchSemaphore(value: 0)

    public init(path: String, interval: Double, render: @escaping @Sendable () -> String) {
        self.path = path
        self.interval = interval
        self.render = render
    }

    /// Writes the file now, then every `interval` on a thread of its own until `finish`.
    public func start() {
        Thread.detachNewThread { [self] in
            repeat { write() } while stop.wait(timeout: .now() + interval) == .timedOut
            try? Descriptor.cwd.unlink(path)
            stopped.signal()
        }
    }

    /// Stops the writer and removes the file.
    public func finish() {
        stop.signal()
        _ = stopped.wait(timeout: .now() + 5)
    }

    /// One atomic replacement of the file; a failure is logged and tried again next interval.
    func write() {
        let temporary = path + ".tmp"
        let bytes = Array(render().utf8)
        // A fresh file each time (O_EXCL, after removing a leftover): in a directory others may
        // write to, a planted symlink or file at the temporary name is never written through.
        try? Descriptor.cwd.unlink(temporary)
        do throws(SystemError) {
            let file = try FileDescriptor.open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode: 0o644)
            try file.descriptor.writeAll(bytes)
            try file.close()
        } catch {
            FileSystem.logger.warning("metrics: cannot write \(temporary): \(error.errno)")
            try? Descriptor.cwd.unlink(temporary)
            return
        }
        do throws(SystemError) { try Descriptor.cwd.rename(temporary, to: path, in: .cwd) } catch {
            FileSystem.logger.warning("metrics: cannot replace \(path): \(error.errno)")
            try? Descriptor.cwd.unlink(temporary)
        }
    }
}
