import FileIO
import Foundation
import ImageFS
import Layers
import Logging
import OCI
import Registry
import Store
import Transfer

/// A pull that a mount serves from before it has finished (`mount --lazy`).
///
/// `start` returns once the tree is known: raw layers need only the manifest; an uncompressed
/// tar's headers are read with `Range` requests (contents are skipped); compressed tars cannot
/// be read out of order, so they are pulled in full first. Every missing blob then arrives
/// chunk by chunk into `tmp/` — what readers wait for first, the rest in order — and
/// `complete` verifies each blob against its digest and commits it, and records the image once
/// every blob is in, exactly as `pull` would have. Until a blob is verified its bytes are served
/// unverified; a mismatch fails that layer's reads with EIO and nothing enters the cache.
///
/// The GC lock is held shared from start to finish, as a pull holds it: `prune` waits rather
/// than delete what the mount is about to reference.
public struct LazyPull: Sendable {
    struct Pending: Sendable {
        let blob: RangedBlob
        let hashing: Task<Digest?, any Error>
        /// The tar's index, for a tar layer; nil for a raw file.
        let index: LayerIndex?
        let diffID: Digest
        let layerNumbers: [Int32]
    }

    public let reference: Reference
    public let record: ImageRecord
    /// What the mount serves: the tree, and every layer's bytes (a lazy layer's through its
    /// gate).
    public let tree: ImageTree
    public let layers: [LayerData]
    public let gates: [(any LayerGate)?]
    let pending: [Pending]
    let fetching: Task<Void, any Error>
    let background: RangedFetch.Signal
    let resolved: ResolvedImage
    /// The verified image config, stored with the image in `complete`.
    let configBytes: [UInt8]
    let store: ContentStore
    let logger: Logger
    let gcLock: StoreLock

    /// Resolves `reference` and prepares everything a mount needs; starts the downloads.
    /// `pinned`: the manifest to fetch, whatever the tag names now (a server taking a lazy
    /// mount over serves what the first one resolved); the image is still recorded under
    /// `reference`, as the first server would have recorded it.
    static func start(_ reference: Reference, pinned: Digest? = nil, puller: Puller, streams: Int = 4) async throws -> LazyPull {
        let store = puller.store
        let gcLock = try await store.gcLock(exclusive: false)
        var blobs: [Digest: RangedBlob] = [:]
        var fetching: Task<Void, any Error>?
        do {
            return try await prepare(reference, pinned: pinned, puller: puller, streams: streams, gcLock: gcLock,
                                     blobs: &blobs, fetching: &fetching)
        } catch {
            for blob in blobs.values {
                blob.fail("the lazy mount of \(reference) was abandoned: \(error)")
                try? FileSystem.remove(blob.path)
            }
            fetching?.cancel()
            gcLock.release()
            throw error
        }
    }

    private static func prepare(_ reference: Reference, pinned: Digest?, puller: Puller, streams: Int, gcLock: StoreLock,
                                blobs: inout [Digest: RangedBlob], fetching: inout Task<Void, any Error>?) async throws -> LazyPull {
        // Until the mount serves, only what building the tree reads is fetched: the background
        // download would compete with it for the registry's disk and the network.
        let background = RangedFetch.Signal()
        let store = puller.store
        let resolved = try await puller.resolve(pinned.map { reference.withDigest($0) } ?? reference)
        let endpoints = try resolved.endpoints(reference, client: puller.client)
        let configBytes = try await puller.config(resolved.manifest.config, endpoints: endpoints, reference: reference, storing: false)
        let plan = try PullPlan(resolved.manifest, configBytes: configBytes, reference: reference)
        try plan.checkPlatform(puller.platform, chosen: puller.platformChosen, reference: reference, logger: puller.logger)

        // Which layers must arrive lazily: raw files and uncompressed tars not yet stored.
        var order: [Digest] = []
        for job in plan.layers {
            let digest = job.descriptor.digest
            let missing: Bool
            switch job.content {
            case .file: missing = !store.hasBlob(digest)
            case .tar(.none): missing = !store.hasLayer(job.expectedDiffID ?? digest)
            case .tar: missing = false
            }
            guard missing, blobs[digest] == nil else { continue }
            blobs[digest] = try RangedBlob(descriptor: job.descriptor, path: store.layout.scratch(digest, .lazy), chunkSize: 1 << 20,
                                           readAhead: 8, chunksPerRequest: 16, signal: background)
            order.append(digest)
        }
        let ordered = order.compactMap { blobs[$0] }
        let fetch = RangedFetch(blobs: ordered, client: puller.client, endpoints: endpoints, reference: reference,
                                signal: background)
        let hashing = Dictionary(uniqueKeysWithValues: ordered.map { ($0.descriptor.digest, $0.startHashing()) })
        fetching = Task {
            do { try await fetch.run(streams: streams) } catch {
                for blob in ordered { blob.fail("fetching \(reference) failed: \(error)") }
                throw error
            }
        }

        // Compressed tars (and stored layers) come whole, before the mount.
        var fetcher = puller.fetcher
        fetcher.progress = nil
        var diffIDs: [Digest] = []
        var indexes: [Digest: LayerIndex] = [:]
        for job in plan.layers {
            let digest = job.descriptor.digest
            if let blob = blobs[digest] {
                if case .tar = job.content, indexes[digest] == nil {
                    indexes[digest] = try await BlockingThreads.run {
                        try LayerIndexer.index(source: blob, size: job.descriptor.size, layer: digest.description)
                    }
                }
                diffIDs.append(job.file == nil ? (job.expectedDiffID ?? digest) : digest)
            } else {
                diffIDs.append(try await fetcher.fetch(job.descriptor, content: job.content, expected: job.expectedDiffID,
                                                       endpoints: endpoints, reference: reference).diffID)
            }
        }

        let record = plan.record(resolved, diffIDs: diffIDs)

        var treeLayers: [(name: String, index: LayerIndex)] = []
        var layers: [LayerData] = []
        var gates: [(any LayerGate)?] = []
        for layer in record.layers {
            let blob = blobs[layer.digest]
            let index = try (layer.file == nil ? indexes[layer.digest] : nil) ?? store.index(of: layer)
            treeLayers.append((layer.digest.description, index))
            layers.append(try blob.map { LayerData(file: $0.file, sums: nil) } ?? store.layerData(of: layer))
            gates.append(blob.map { ReadStartsDownload(blob: $0, background: background) })
        }
        let tree = try ImageTree.build(layers: treeLayers)

        let pending = order.compactMap { digest -> Pending? in
            guard let blob = blobs[digest], let hashing = hashing[digest],
                  let position = record.layers.firstIndex(where: { $0.digest == digest }) else { return nil }
            let numbers = record.layers.indices.filter { record.layers[$0].digest == digest }.map { Int32($0) }
            return Pending(blob: blob, hashing: hashing, index: indexes[digest], diffID: record.layers[position].diffID, layerNumbers: numbers)
        }
        puller.logger.notice("lazy mount of \(reference) (\(record.digest)): \(pending.count) blob(s) arriving on demand, \(record.layers.count - pending.count) layer(s) already stored")
        return LazyPull(
            reference: reference, record: record,
            tree: tree, layers: layers, gates: gates,
            pending: pending, fetching: fetching ?? Task {}, background: background, resolved: resolved,
            configBytes: configBytes, store: store, logger: puller.logger, gcLock: gcLock)
    }

    /// Waits for every blob, verifies and commits each, and records the image when all are in.
    /// `layerFailed` is told the layer numbers whose reads must now fail. True when the image
    /// is complete in the store.
    public func complete(layerFailed: @escaping @Sendable (Int32) -> Void) async -> Bool {
        defer { gcLock.release() }
        await background.waitUntilOn(atMost: Self.bulkHoldBack)
        background.turnOn()
        let verified = await withTaskGroup(of: Bool.self) { group in
            for item in pending {
                group.addTask { await commit(item, layerFailed: layerFailed) }
            }
            var all = true
            for await ok in group where !ok { all = false }
            return all
        }
        _ = try? await fetching.value
        guard verified else {
            logger.error("lazy mount of \(reference): not every blob verified; the image was NOT added to the store")
            return false
        }
        do {
            let config = resolved.manifest.config.digest
            if !store.hasBlob(config) { try store.writeBlob(configBytes, digest: config) }
            try await ImageCommit.commit(record, resolved: resolved, reference: reference, store: store, logger: logger)
        } catch {
            logger.error("lazy mount of \(reference): every blob verified but recording the image failed: \(error)")
            return false
        }
        logger.notice("lazy mount of \(reference): all \(pending.count) blob(s) arrived and verified; \(record.digest) is now in the store")
        return true
    }

    private func commit(_ item: Pending, layerFailed: @Sendable (Int32) -> Void) async -> Bool {
        let digest = item.blob.descriptor.digest
        do {
            try await item.blob.verify(item.hashing, reference: reference)
            try item.blob.file.sync()
            guard let sums = item.blob.sums else {
                throw PullError(.internalError, "blob \(digest) verified but its chunk sums were not made")
            }
            if let index = item.index {
                if !store.hasLayer(item.diffID) {
                    try store.commitLayerTar(from: item.blob.path, diffID: item.diffID, sums: sums)
                    try store.commitLayerIndex(index, diffID: item.diffID)
                }
            } else if !store.hasBlob(digest) {
                try store.commitBlob(from: item.blob.path, digest: digest, sums: sums)
            }
            try? FileSystem.remove(item.blob.path)
            logger.info("lazy mount of \(reference): \(digest) verified and stored")
            return true
        } catch {
            if let error = error as? RegistryError, error.kind == .digestMismatch {
                // Loud: reads already served from this blob were not what the manifest promised.
                logger.error("LAZY MOUNT INTEGRITY FAILURE: \(reference) layer \(digest): \(error.message). Reads of its files now fail with EIO; nothing of it was stored.")
            } else {
                logger.error("lazy mount of \(reference): layer \(digest) did not arrive (\(error)); reads of its files fail with EIO")
            }
            item.blob.fail("\(error)")
            for number in item.layerNumbers { layerFailed(number) }
            try? FileSystem.remove(item.blob.path)
            return false
        }
    }

    /// Stops the downloads and removes what did not make it into the store (the mount ended
    /// before the pull did).
    public func abandon() {
        background.turnOn()
        fetching.cancel()
        for item in pending {
            item.blob.fail("the mount of \(reference) ended before the blob arrived")
            try? FileSystem.remove(item.blob.path)
        }
    }
}

extension LazyPull {
    /// How long the in-order download waits after the mount is ready, unless a read comes
    /// first. An application started on a fresh mount spends that time loading its own code,
    /// and a bulk download beside it delays the application's first reads. Reads are served
    /// at once either way; the whole blob arrives at most this much later.
    static let bulkHoldBack: Duration = .milliseconds(500)

    /// A lazy layer's reads: the first one starts the in-order download (the application is
    /// now reading the model), then waits for its own chunks, which go first.
    struct ReadStartsDownload: LayerGate {
        let blob: RangedBlob
        let background: RangedFetch.Signal

        func waitFor(offset: Int64, length: Int) -> Bool {
            background.turnOn()
            return blob.waitFor(offset: offset, length: length)
        }
    }
}
