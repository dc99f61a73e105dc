import Mounts
import Pull
import Logging
import OCI
import Registry
import Store
import Synchronization

/// Turns a publish request into a cached image: from the store when the pull policy allows,
/// else through the `PullCoordinator` (a pull that outlives the RPC), with a registry client
/// made for this request's TLS setting and credentials and always shut down.
struct ImageSource: Sendable {
    let store: ContentStore
    let logger: Logger
    let coordinator: PullCoordinator
    let metrics: CSIMetrics
    /// registries.conf (mirrors, rewrites); nil for the default search.
    let registriesConf: String?

    func image(for request: PublishRequest) async throws -> ImageRecord {
        if request.pullPolicy != .always, let cached = try cachedImage(request.reference, platform: request.platform) { return cached }
        guard request.pullPolicy != .never else {
            throw CSIError.failedPrecondition("volume \(request.volumeID): image \(request.reference) is not cached on this node and pullPolicy is Never; pull it first (imgvol pull) or use IfNotPresent")
        }
        var options = RegistryClient.Options()
        options.tlsVerify = request.tlsVerify
        options.registriesConf = try RegistriesConf.load(explicit: registriesConf)
        request.secrets.apply(to: &options)
        let session = PullSession(store: store, logger: logger, settings: PullSession.Settings(client: options, platform: request.platform))
        let key = PullCoordinator.Key(image: request.reference.description, platform: request.platform.description)
        return try await coordinator.pull(key) { [metrics, reference = request.reference] in
            try await Self.pull(reference, session: session, metrics: metrics)
        }
    }

    /// What a lazy mount's server needs to reach the registry; nil when the image is cached
    /// (and the policy lets the cache serve), so the mount need not be lazy.
    func lazySource(for request: PublishRequest) throws -> MountLauncher.LazySource? {
        if request.pullPolicy != .always, try cachedImage(request.reference, platform: request.platform) != nil { return nil }
        guard request.pullPolicy != .never else {
            throw CSIError.failedPrecondition("volume \(request.volumeID): image \(request.reference) is not cached on this node and pullPolicy is Never; pull it first (imgvol pull) or use IfNotPresent")
        }
        var arguments = ["--tls-verify=\(request.tlsVerify)", "--quiet", "--platform", request.platform.description]
        if let registriesConf { arguments += ["--registries-conf", registriesConf] }
        return MountLauncher.LazySource(pullArguments: arguments, credentials: try request.secrets.credentialLine(for: request.reference))
    }

    func cachedImage(_ reference: Reference, platform: Platform) throws(StoreError) -> ImageRecord? {
        try store.completeImage(reference, platform: platform)
    }

    /// The image for a volume being restored after a restart: the exact digest it served
    /// if still cached; pulled (without the secret, which is not stored) only when missing.
    func restoreImage(for volume: PublishedVolume) async throws -> ImageRecord {
        if store.hasImage(volume.digest), let record = try? store.readImage(volume.digest),
           record.layers.allSatisfy({ store.hasLayer($0) }) {
            return record
        }
        let reference = try Reference(volume.image).withDigest(volume.digest)
        var options = RegistryClient.Options()
        options.tlsVerify = volume.attributes["tlsVerify"]?.lowercased() != "false"
        options.registriesConf = try RegistriesConf.load(explicit: registriesConf)
        let platform = try volume.attributes["platform"].map { try Platform(parsing: $0) } ?? .host
        let session = PullSession(store: store, logger: logger, settings: PullSession.Settings(client: options, platform: platform))
        let key = PullCoordinator.Key(image: reference.description, platform: platform.description)
        return try await coordinator.pull(key) { [metrics] in
            try await Self.pull(reference, session: session, metrics: metrics)
        }
    }

    /// Pulls through `session`, counting what it downloads for the metrics and the log.
    static func pull(_ reference: Reference, session: PullSession, metrics: CSIMetrics) async throws -> ImageRecord {
        var session = session
        let counter = DownloadCounter()
        session.settings.progress = counter
        let logger = session.logger
        let platform = session.settings.platform
        let clock = ContinuousClock()
        let start = clock.now
        logger.notice("pulling \(reference) for \(platform)")
        do {
            let record = try await session.pull(reference)
            metrics.pullFinished(success: true, bytes: counter.bytes, duration: clock.now - start)
            logger.notice("pulled \(reference) (\(record.digest)): \(counter.bytes) bytes downloaded in \(clock.now - start)")
            return record
        } catch {
            metrics.pullFinished(success: false, bytes: counter.bytes, duration: clock.now - start)
            logger.warning("pull of \(reference) failed: \(error)")
            throw error
        }
    }
}

/// Counts the bytes a pull downloads (layers already cached count nothing), for the
/// `imgvol_csi_pull_bytes_total` metric.
final class DownloadCounter: PullProgress {
    private let state = Mutex<[Digest: Int64]>([:])

    var bytes: Int64 { state.withLock { $0.values.reduce(0, +) } }

    func layerStarted(_ digest: Digest, size: Int64) {}

    func layerProgress(_ digest: Digest, bytes: Int64) {
        state.withLock { $0[digest] = max($0[digest] ?? 0, bytes) }
    }

    func layerFinished(_ digest: Digest, cached: Bool) {}
}
