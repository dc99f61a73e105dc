import FileIO
import Foundation
import Layers
import Logging
import OCI
import Registry
import Store

/// Pulls one image into the store: manifest (through an index to this platform), config,
/// then every missing layer, several at once. The image record and the reference are written
/// last, so an interrupted pull leaves only resumable partial downloads behind.
public struct Puller: Sendable {
    public let store: ContentStore
    public let client: RegistryClient
    public let logger: Logger
    public var platform: Platform = .host
    public var progress: (any PullProgress)?
    /// Layers downloaded at once.
    public var parallelLayers = 3

    public init(store: ContentStore, client: RegistryClient, logger: Logger) {
        self.store = store
        self.client = client
        self.logger = logger
    }

    @discardableResult
    public func pull(_ reference: Reference) async throws -> ImageRecord {
        let gc = try await store.gcLock(exclusive: false)
        defer { gc.release() }

        var fetched = try await client.fetchManifest(reference)
        var indexDigest: Digest?
        var indexBytes: [UInt8]?
        if case .index(let index) = fetched.document {
            guard let chosen = index.manifest(for: platform) else {
                let offered = index.platforms.map(\.description).joined(separator: ", ")
                throw PullError(.noMatchingPlatform, "image \(reference) has no manifest for \(platform) (it offers: \(offered.isEmpty ? "none" : offered)); choose one with --platform")
            }
            indexDigest = fetched.digest
            indexBytes = fetched.bytes
            fetched = try await client.fetchManifest(reference, digest: chosen.digest)
        }
        guard case .image(let manifest) = fetched.document else {
            throw PullError(.invalidImage, "\(reference): an index points at another index; nested indexes are not supported")
        }
        logger.debug("resolved \(reference) to \(fetched.digest)")

        if store.hasImage(fetched.digest), let record = try? store.readImage(fetched.digest),
           record.layers.allSatisfy({ store.hasLayer($0.diffID) }) {
            for layer in record.layers { progress?.layerFinished(layer.digest, cached: true) }
            try await store.setReference(reference, to: record.digest)
            return record
        }

        let endpoints = [fetched.endpoint] + (try client.endpoints(for: reference)).filter { $0 != fetched.endpoint }
        let configBytes = try await config(manifest.config, endpoints: endpoints, reference: reference)
        let config = try JSONCoding.decode(ImageConfig.self, from: configBytes, what: "image config of \(reference)")
        let diffIDs = config.rootfs?.diffIDs ?? []
        guard diffIDs.count == manifest.layers.count else {
            throw PullError(.invalidImage, "image \(reference) lists \(manifest.layers.count) layers but its config has \(diffIDs.count) diff_ids; the image is inconsistent")
        }

        try await fetchLayers(Array(zip(manifest.layers, diffIDs)), endpoints: endpoints, reference: reference)

        try store.writeBlob(fetched.bytes, digest: fetched.digest)
        if let indexBytes, let indexDigest { try store.writeBlob(indexBytes, digest: indexDigest) }
        let record = ImageRecord(
            digest: fetched.digest, manifestMediaType: fetched.mediaType, indexDigest: indexDigest,
            configDigest: manifest.config.digest,
            layers: zip(manifest.layers, diffIDs).map { ImageRecord.Layer(digest: $0.digest, mediaType: $0.mediaType, size: $0.size, diffID: $1) },
            platform: [config.os, config.architecture, config.variant].compactMap { $0 }.joined(separator: "/"),
            created: config.created, pulledAt: ISO8601DateFormatter().string(from: Date()))
        // Merging the layers here refuses an image whose layers do not stack safely (a write
        // through a symlink) before it is recorded, and caches the tree for the first mount.
        _ = try ImageService(store: store, logger: logger).tree(of: record)
        try store.writeImage(record)
        try await store.setReference(reference, to: record.digest)
        return record
    }

    /// The config from the store, or fetched once even when several pulls race for it.
    private func config(_ descriptor: Descriptor, endpoints: [Endpoint], reference: Reference) async throws -> [UInt8] {
        if let bytes = try? store.readBlob(descriptor.digest) { return bytes }
        let lock = try await store.lock("blob-\(descriptor.digest.hex)")
        defer { lock.release() }
        if let bytes = try? store.readBlob(descriptor.digest) { return bytes }
        let bytes = try await client.fetchBlob(descriptor, from: endpoints, reference: reference)
        try store.writeBlob(bytes, digest: descriptor.digest)
        return bytes
    }

    private func fetchLayers(_ layers: [(Descriptor, Digest)], endpoints: [Endpoint], reference: Reference) async throws {
        var seen = Set<Digest>()
        let unique = layers.filter { seen.insert($0.1).inserted }
        let fetcher = LayerFetcher(store: store, client: client, logger: logger, progress: progress)
        try await withThrowingTaskGroup(of: Void.self) { group in
            var next = 0
            func startNext() {
                guard next < unique.count else { return }
                let (layer, diffID) = unique[next]
                next += 1
                group.addTask { try await fetcher.fetch(layer, diffID: diffID, endpoints: endpoints, reference: reference) }
            }
            for _ in 0..<max(1, parallelLayers) { startNext() }
            while try await group.next() != nil { startNext() }
        }
    }
}
