import FileIO
#if canImport(Glibc)
import Glibc
#endif
import Logging
import OCI
import Registry
import Store

/// Pulls one image into the store: manifest (through an index to this platform), config,
/// then every missing layer, several at once. The image record and the reference are written
/// last, so an interrupted pull leaves only resumable partial downloads behind. Made by a
/// `PullSession`, which owns its registry client.
struct Puller: Sendable {
    let store: ContentStore
    let client: RegistryClient
    let logger: Logger
    var platform: Platform = .host
    var platformChosen = false
    var progress: (any PullProgress)?
    /// Layers downloaded at once.
    var parallelLayers = 3
    /// Concurrent `Range` streams for one big blob. Two, not more: on a machine where a pull
    /// is bound by CPU rather than by the link, each stream's window memory and its share of
    /// the event loop cost more than a further stream gains.
    var rangeStreams = 2

    /// A full disk is said in the user's terms: how much the image needs and how much is free.
    @discardableResult
    func pull(_ reference: Reference) async throws -> ImageRecord {
        var layerBytes: Int64 = 0
        do { return try await pullOnce(reference, layerBytes: &layerBytes) } catch {
            guard Self.isOutOfSpace(error) else { throw error }
            throw PullError(.noSpace, spaceMessage(reference, layerBytes: layerBytes, cause: error))
        }
    }

    static func isOutOfSpace(_ error: any Error) -> Bool {
        if let error = error as? SystemError { return [ENOSPC, EDQUOT].contains(error.errno) }
        if let error = error as? StoreError { return error.kind == .noSpace }
        return false
    }

    private func spaceMessage(_ reference: Reference, layerBytes: Int64, cause: any Error) -> String {
        var st = statvfs()
        let free = statvfs(store.root, &st) == 0 ? Int64(st.f_bavail) * Int64(st.f_frsize) : -1
        let mib = { (bytes: Int64) in "\((bytes * 10 / 1_048_576 + 5) / 10) MiB" }
        let freeText = free >= 0 ? "\(mib(free)) free" : "free space unknown"
        let neededText = layerBytes > 0 ? "the image needs at least \(mib(layerBytes)) (its layers as sent; more unpacked), " : ""
        return "no space left in the store at \(store.root) pulling \(reference): \(neededText)\(freeText) (\(cause)); "
            + "free space (imgvol prune, imgvol rm) or pass a --root with room; the store is unchanged and the pull resumes"
    }

    private func pullOnce(_ reference: Reference, layerBytes: inout Int64) async throws -> ImageRecord {
        let gc = try await store.gcLock(exclusive: false)
        defer { gc.release() }

        let resolved = try await resolve(reference)
        let manifest = resolved.manifest
        layerBytes = manifest.layers.reduce(0) { $0 + $1.size }
        // A record that does not decode is written again by this pull; a layer whose index
        // does not decode, or that a mount found damaged, is moved aside and fetched again.
        if store.hasImage(resolved.fetched.digest), let record = try? store.readImage(resolved.fetched.digest) {
            for part in try store.setAsideDamagedLayers(of: record) {
                logger.warning("\(reference): \(part); moved aside to \(store.layout.damagedDir), fetching it again")
            }
            // A layer without sums, or one a mount found damaged, is seen to by the fetch.
            if record.layers.allSatisfy({ store.isServable($0) }), record.blobs.allSatisfy({ store.hasBlob($0) }) {
                for layer in record.layers { progress?.layerFinished(layer.digest, cached: true) }
                try await store.setReference(reference, to: record.digest)
                return record
            }
        }

        let endpoints = try resolved.endpoints(reference, client: client)
        let configBytes = try await config(manifest.config, endpoints: endpoints, reference: reference)
        let plan = try PullPlan(manifest, configBytes: configBytes, reference: reference)
        try plan.checkPlatform(platform, chosen: platformChosen, reference: reference, logger: logger)
        let merger = LayerMerger(plan: plan, store: store)
        let diffIDs = try await fetchLayers(plan, endpoints: endpoints, reference: reference, merger: merger)
        let record = plan.record(resolved, diffIDs: diffIDs)
        let tree = try await merger.tree()
        try await ImageCommit.commit(record, resolved: resolved, reference: reference, store: store, logger: logger, tree: tree)
        // The merger's builder holds the tree's nodes too.
        ShortLivedProcess.keepUntilExit((merger, tree))
        return record
    }

    func resolve(_ reference: Reference) async throws -> ResolvedImage {
        let resolved = try await ResolvedImage.resolve(reference, platform: platform, client: client)
        logger.debug("resolved \(reference) to \(resolved.fetched.digest)")
        return resolved
    }

    var fetcher: LayerFetcher {
        var fetcher = LayerFetcher(store: store, client: client, logger: logger, progress: progress)
        fetcher.rangeStreams = rangeStreams
        return fetcher
    }

    /// The image config, verified: from the store, or fetched once even when several pulls
    /// race for it. Stored unless `storing` is false (a lazy mount stores it with the rest
    /// once every blob has arrived, and does not wait for its fsync before serving).
    func config(_ descriptor: Descriptor, endpoints: [Endpoint], reference: Reference, storing: Bool = true) async throws -> [UInt8] {
        if store.hasBlob(descriptor.digest), let bytes = try? store.readBlob(descriptor.digest) { return bytes }
        if !storing { return try await client.fetchBlob(descriptor, from: endpoints, reference: reference) }
        let lock = try await store.lock("blob-\(descriptor.digest.hex)")
        defer { lock.release() }
        if store.hasBlob(descriptor.digest), let bytes = try? store.readBlob(descriptor.digest) { return bytes }
        // Missing, or stored damaged: fetched again, and the damaged copy replaced.
        let bytes = try await client.fetchBlob(descriptor, from: endpoints, reference: reference)
        try store.writeBlob(bytes, digest: descriptor.digest)
        return bytes
    }

    /// Fetches every layer, a few at once, and returns their diff_ids in manifest order. A
    /// layer listed twice is fetched once.
    private func fetchLayers(_ plan: PullPlan, endpoints: [Endpoint], reference: Reference, merger: LayerMerger) async throws -> [Digest] {
        var seen = Set<Digest>()
        let unique = plan.layers.filter { seen.insert($0.descriptor.digest).inserted }
        let fetcher = self.fetcher
        var diffIDs: [Digest: Digest] = [:]
        try await withThrowingTaskGroup(of: (Digest, LayerFetcher.Fetched).self) { group in
            var next = 0
            func startNext() {
                guard next < unique.count else { return }
                let job = unique[next]
                next += 1
                group.addTask {
                    let fetched = try await fetcher.fetch(job.descriptor, content: job.content, expected: job.expectedDiffID,
                                                          endpoints: endpoints, reference: reference)
                    return (job.descriptor.digest, fetched)
                }
            }
            for _ in 0..<max(1, parallelLayers) { startNext() }
            while let (digest, fetched) = try await group.next() {
                diffIDs[digest] = fetched.diffID
                await merger.arrived(digest, diffID: fetched.diffID, index: fetched.index)
                startNext()
            }
        }
        return try plan.layers.map { job in
            guard let diffID = diffIDs[job.descriptor.digest] else {
                throw PullError(.invalidImage, "layer \(job.descriptor.digest) of \(reference) was not fetched")
            }
            return diffID
        }
    }
}
