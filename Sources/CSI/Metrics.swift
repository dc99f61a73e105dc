import CoreMetrics
import FileIO
import Prometheus
import Mounts
import Store
import Synchronization

/// The plugin's Prometheus metrics. swift-metrics types over a registry of our own (not the
/// process-wide `MetricsSystem`, which can be bootstrapped only once per process: tests start
/// several plugins in one process).
public final class CSIMetrics: Sendable {
    public let registry: PrometheusCollectorRegistry
    private let factory: PrometheusMetricsFactory
    private let store: ContentStore
    /// Volume id by target path.
    private let volumeIDs = Mutex<[String: String]>([:])

    static let pullDuration = "imgvol_csi_pull_duration_seconds"
    /// Layers and files a mount server found damaged while serving (reads of them fail with
    /// EIO) and `imgvol check --repair` has not repaired yet.
    static let damagedParts = "imgvol_csi_damaged_parts"

    /// Volumes whose mount died whole (keeper and server) and the plugin served again.
    static let restores = "imgvol_csi_volume_restores_total"
    /// Per volume: servers its keeper replaced (crashed, killed or upgraded), from the mount
    /// records when scraped.
    static let serverRestarts = "imgvol_csi_server_restarts"

    public init(store: ContentStore) {
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        // Model pulls take minutes, far beyond the default buckets.
        factory.durationHistogramBuckets[Self.pullDuration] = [.milliseconds(100), .seconds(1), .seconds(5), .seconds(15), .seconds(30),
                                                               .seconds(60), .seconds(120), .seconds(300), .seconds(600), .seconds(1800)]
        self.registry = registry
        self.factory = factory
        self.store = store
        // Present from the start, so dashboards see zeros rather than gaps.
        Gauge(label: "imgvol_csi_live_volumes", factory: factory).record(0)
        Gauge(label: Self.damagedParts, factory: factory).record(0)
        Counter(label: Self.restores, factory: factory).increment(by: 0)
        Counter(label: "imgvol_csi_pull_bytes_total", factory: factory).increment(by: 0)
        for result in ["success", "failure"] {
            Counter(label: "imgvol_csi_pulls_total", dimensions: [("result", result)], factory: factory).increment(by: 0)
        }
    }

    /// Every RPC, by method and status code; failures also under `imgvol_csi_rpc_errors_total`.
    func rpcFinished(_ rpc: String, code: String, duration: Duration) {
        Counter(label: "imgvol_csi_rpcs_total", dimensions: [("rpc", rpc), ("code", code)], factory: factory).increment()
        Timer(label: "imgvol_csi_rpc_duration_seconds", dimensions: [("rpc", rpc)], factory: factory)
            .recordNanoseconds(Self.nanoseconds(duration))
        if code != "OK" {
            Counter(label: "imgvol_csi_rpc_errors_total", dimensions: [("rpc", rpc), ("code", code)], factory: factory).increment()
        }
    }

    func pullFinished(success: Bool, bytes: Int64, duration: Duration) {
        Counter(label: "imgvol_csi_pulls_total", dimensions: [("result", success ? "success" : "failure")], factory: factory).increment()
        Counter(label: "imgvol_csi_pull_bytes_total", factory: factory).increment(by: max(0, bytes))
        Timer(label: Self.pullDuration, factory: factory).recordNanoseconds(Self.nanoseconds(duration))
    }

    func volumeRestored() {
        Counter(label: Self.restores, factory: factory).increment()
    }

    func updateRestarts() {
        let volumes = volumeIDs.withLock { $0 }
        for record in MountTable(store: store).live() {
            guard let volume = volumes[record.mountpoint] else { continue }
            Gauge(label: Self.serverRestarts, dimensions: [("volume_id", volume)], factory: factory).record(record.restarts ?? 0)
        }
    }

    /// The published volumes: their count, and their ids for the per-volume metrics.
    func setVolumes(_ volumes: [PublishedVolume]) {
        Gauge(label: "imgvol_csi_live_volumes", factory: factory).record(volumes.count)
        volumeIDs.withLock { $0 = Dictionary(volumes.map { ($0.targetPath, $0.volumeID) }, uniquingKeysWith: { a, _ in a }) }
    }

    /// Bytes the store's layers and blobs occupy on disk, measured when scraped.
    func updateCacheSize() {
        var total: Int64 = 0
        for dir in [store.layout.layersDir, store.layout.blobsDir] {
            for name in FileSystem.listDirectory(dir) { total += FileSystem.diskUsage(dir + "/" + name) }
        }
        Gauge(label: "imgvol_csi_cache_size_bytes", factory: factory).record(total)
    }

    /// Counted from the store's damage reports when scraped: the mount servers are processes
    /// of their own, and the reports outlive them. -1 when the reports cannot be read.
    func updateDamage() {
        let count = (try? store.damageReports().count) ?? -1
        Gauge(label: Self.damagedParts, factory: factory).record(count)
    }

    /// The Prometheus text exposition of everything above.
    public func render() -> [UInt8] {
        updateCacheSize()
        updateDamage()
        updateRestarts()
        return registry.emitToBuffer()
    }

    static func nanoseconds(_ duration: Duration) -> Int64 {
        let (seconds, attoseconds) = duration.components
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }
}
