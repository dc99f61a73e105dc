import FileIO
import Foundation
import Integrity
import Layers
import Logging
import OCI
import Registry
import Store
import Synchronization
import Transfer

/// Brings one layer into the store: download (verified; resumable on one stream, or several
/// `Range` streams for a big blob), decompress alongside the download, check the diff_id,
/// commit the uncompressed tar, index it.
struct LayerFetcher: Sendable {
    let store: ContentStore
    let client: RegistryClient
    let logger: Logger
    var progress: (any PullProgress)?
    /// Concurrent `Range` streams for one big blob (1: one stream).
    var rangeStreams = 1
    /// Blobs at least this large use `rangeStreams`.
    var rangeThreshold: Int64 = 64 << 20
    /// Uncompressed tar blobs at least this large are written split (`LayerSplit`), their big
    /// files apart, like every decompressed layer; smaller ones are kept as the blob, unsplit.
    static let splitMinimum: Int64 = 64 << 20

    /// A layer in the store, and its index when this fetch made it.
    struct Fetched: Sendable {
        let diffID: Digest
        /// As committed; nil when the layer was already indexed (read it from the store).
        /// The pull's merger uses it instead of reading and decoding it back.
        let index: LayerIndex?
    }

    /// Brings one layer in. `expected` is the image config's diff_id; artifacts have none, so
    /// a compressed artifact tar is named by what it decompresses to.
    func fetch(_ layer: Descriptor, content: LayerContent, expected: Digest?, endpoints: [Endpoint],
               reference: Reference) async throws -> Fetched {
        switch content {
        case .file:
            try await fetchFile(layer, endpoints: endpoints, reference: reference)
            return Fetched(diffID: layer.digest, index: nil)
        case .tar(let compression):
            let known = expected ?? (compression == .none ? layer.digest : nil)
            let lock = try await store.lock("layer-\((known ?? layer.digest).hex)")
            defer { lock.release() }
            if let known, store.hasReport(known), store.hasLayerTar(known) {
                // A mount found its bytes damaged: fetched again, the old ones kept aside.
                logger.warning("layer \(known): a mount found it damaged; moved aside, fetching it again")
                try store.setAsideLayer(known)
                try store.clearReport(known)
            }
            if let known, store.hasLayer(known), cachedLayerHasSums(known) {
                progress?.layerFinished(layer.digest, cached: true)
                return Fetched(diffID: known, index: nil)
            }
            let diffID: Digest
            var index: LayerIndex?
            if let known, store.hasLayerTar(known), store.storedTarIsWhole(known) {
                diffID = known
            } else {
                if let known, store.hasLayerTar(known) {
                    logger.warning("layer \(known): a tar without its index and files was left by an interrupted command; moved aside, fetching it again")
                    try store.setAsideLayer(known)
                }
                progress?.layerStarted(layer.digest, size: layer.size)
                if compression == .none, layer.size < Self.splitMinimum {
                    diffID = layer.digest
                    try await fetchUncompressed(layer, diffID: known ?? layer.digest, endpoints: endpoints, reference: reference)
                } else {
                    (diffID, index) = try await fetchCompressed(layer, compression: compression, expected: known,
                                                                endpoints: endpoints, reference: reference)
                }
            }
            let committed = store.hasLayer(diffID) ? nil : try commitIndex(layer, diffID: diffID, streamed: index)
            // A whole tar found without its index (indexed above) has no sums yet.
            if !store.hasLayerSums(diffID) { try store.recordLayerSums(diffID) }
            progress?.layerFinished(layer.digest, cached: false)
            return Fetched(diffID: diffID, index: committed)
        }
    }

    /// A layer stored without chunk sums (by an older imgvol, or its sums were lost) gets them
    /// now if it verifies against its diff_id; if it does not, it is moved aside (false: fetch
    /// it again).
    private func cachedLayerHasSums(_ diffID: Digest) -> Bool {
        guard !store.hasLayerSums(diffID) else { return true }
        do {
            try store.recordLayerSums(diffID)
            logger.info("layer \(diffID): verified and its chunk checksums recorded")
            return true
        } catch {
            logger.warning("layer \(diffID): \(error); moved aside, fetching it again")
            do { try store.setAsideLayer(diffID) } catch { logger.error("\(error)") }
            return false
        }
    }

    /// Commits the index made while the layer was decompressed, or indexes the stored tar.
    private func commitIndex(_ layer: Descriptor, diffID: Digest, streamed: LayerIndex?) throws -> LayerIndex {
        if var streamed {
            LayerSplit.markApart(&streamed, files: store.layerFiles(diffID))
            try store.commitLayerIndex(streamed, diffID: diffID)
            logger.debug("\(layer.digest): indexed \(streamed.entries.count) entries while decompressing")
            return streamed
        }
        let indexing = ContinuousClock.now
        var index: LayerIndex
        do {
            index = try LayerIndexer.index(tarPath: store.layerTarPath(diffID), layer: layer.digest.description)
        } catch {
            // A verified blob that is not a valid tar will never become one: drop it.
            try? store.discardLayerTar(diffID)
            throw error
        }
        LayerSplit.markApart(&index, files: store.layerFiles(diffID))
        try store.commitLayerIndex(index, diffID: diffID)
        logger.debug("\(layer.digest): indexed \(index.entries.count) entries in \(ContinuousClock.now - indexing)")
        return index
    }

    /// A raw artifact file: the verified blob is the file, renamed into `blobs/`.
    private func fetchFile(_ layer: Descriptor, endpoints: [Endpoint], reference: Reference) async throws {
        let lock = try await store.lock("blob-\(layer.digest.hex)")
        defer { lock.release() }
        if store.hasReport(layer.digest), store.hasBlob(layer.digest) {
            logger.warning("file \(layer.digest): a mount found it damaged; moved aside, fetching it again")
            try store.setAsideBlob(layer.digest)
            try store.clearReport(layer.digest)
        }
        if store.hasBlob(layer.digest) {
            if store.hasBlobSums(layer.digest) {
                progress?.layerFinished(layer.digest, cached: true)
                return
            }
            do {
                try store.recordBlobSums(layer.digest)
                progress?.layerFinished(layer.digest, cached: true)
                return
            } catch {
                logger.warning("file \(layer.digest): \(error); moved aside, fetching it again")
                try store.setAsideBlob(layer.digest)
            }
        }
        progress?.layerStarted(layer.digest, size: layer.size)
        let partial = try await download(layer, direct: true, endpoints: endpoints, reference: reference)
        try partial.handle.sync()
        try store.commitBlob(from: partial.path, digest: layer.digest, sums: partial.sums)
        progress?.layerFinished(layer.digest, cached: false)
    }

    private func partialPath(_ digest: Digest) -> String { store.layout.partial(digest) }

    private func openPartial(_ layer: Descriptor, direct: Bool, retaining: Bool = false) throws -> PartialBlob {
        let digest = layer.digest
        let progress = self.progress
        return try PartialBlob(path: partialPath(digest), direct: direct, retaining: retaining) { bytes in
            progress?.layerProgress(digest, bytes: bytes)
        }
    }

    /// A verified file holding the blob, ready to be renamed into the store, and its sums.
    struct Downloaded {
        let path: String
        let handle: OpenFile
        let sums: ChunkSums
    }

    /// Downloads a blob that needs no decompression, verified: a big one with several
    /// concurrent `Range` streams (hashed in order as chunks land), else one resumable stream.
    private func download(_ layer: Descriptor, direct: Bool, endpoints: [Endpoint], reference: Reference) async throws -> Downloaded {
        if usesRanges(layer) {
            let path = store.layout.scratch(layer.digest, .ranged)
            do {
                let blob = try RangedBlob(descriptor: layer, path: path, chunkSize: 16 << 20, readAhead: 0)
                try await fetchAll(blob, endpoints: endpoints, reference: reference)
                guard let sums = blob.sums else {
                    throw PullError(.internalError, "blob \(layer.digest) of \(reference) verified but its chunk sums were not made")
                }
                return Downloaded(path: path, handle: blob.file, sums: sums)
            } catch let error as RegistryError where error.kind == .rangeUnsupported {
                try? FileSystem.remove(path)
                logger.info("\(error.message); using one stream")
            } catch {
                try? FileSystem.remove(path)
                throw error
            }
        }
        let partial = try openPartial(layer, direct: direct)
        do {
            try await client.download(layer, from: endpoints, reference: reference, into: partial)
            try partial.end()
        } catch let error as RegistryError where error.kind == .digestMismatch || error.kind == .sizeMismatch {
            try? FileSystem.remove(partial.path)
            throw error
        } catch {
            // What arrived stays on disk: the next pull resumes from it.
            try? partial.flush()
            throw error
        }
        return Downloaded(path: partial.path, handle: partial.handle, sums: partial.sums())
    }

    /// The blob is the layer tar: verified, it is renamed into place. No copy.
    private func fetchUncompressed(_ layer: Descriptor, diffID: Digest, endpoints: [Endpoint], reference: Reference) async throws {
        let partial = try await download(layer, direct: true, endpoints: endpoints, reference: reference)
        guard layer.digest == diffID else {
            try? FileSystem.remove(partial.path)
            throw PullError(.diffIDMismatch, "layer \(layer.digest) of \(reference) is uncompressed, but the image config lists diff_id \(diffID) for it; the image is inconsistent")
        }
        try partial.handle.sync()
        try store.commitLayerTar(from: partial.path, diffID: diffID, sums: partial.sums)
    }

    private func fetchCompressed(_ layer: Descriptor, compression: LayerCompression, expected: Digest?,
                                 endpoints: [Endpoint], reference: Reference) async throws -> (Digest, LayerIndex?) {
        let output = store.layout.scratchTar(layer.digest)
        defer {
            try? FileSystem.remove(output.tar)
            try? FileSystem.removeTree(output.apart.directory)
        }
        let result: Decompressed
        if usesRanges(layer), let ranged = try await decompressRanged(layer, compression: compression, to: output,
                                                                     endpoints: endpoints, reference: reference) {
            result = ranged
        } else if compression == .none, !FileSystem.exists(partialPath(layer.digest)),
                  let piped = try await decompressPiped(layer, to: output, endpoints: endpoints, reference: reference) {
            result = piped
        } else {
            result = try await decompressStreamed(layer, compression: compression, to: output, endpoints: endpoints, reference: reference)
        }
        let actual = result.diffID
        if let expected, actual != expected {
            try? FileSystem.remove(partialPath(layer.digest))
            throw PullError(.diffIDMismatch, "layer \(layer.digest) of \(reference) uncompresses to \(actual), but the image config says diff_id \(expected); the image is inconsistent, nothing was stored")
        }
        var index = result.index
        if !store.hasLayerTar(actual) {
            var sums = result.sums
            if !result.files.isEmpty {
                // The splitter's reading of the tar, checked against libarchive's.
                let checked = try index ?? LayerIndexer.index(tarPath: output.tar, layer: layer.digest.description)
                let putBack = try LayerSplit.reconcile(checked, files: result.files, tarPath: output.tar, apart: output.apart)
                if !putBack.isEmpty {
                    // The tar changed where the files went back: sum it as it is now.
                    sums = StoredSums(data: try ChunkSummer.sums(of: try OpenFile.openRead(output.tar)),
                                      apart: sums.apart.filter { !putBack.contains($0.key) })
                }
                index = checked
            }
            try store.commitLayerTar(output, diffID: actual, sums: sums)
        }
        try? FileSystem.remove(partialPath(layer.digest))
        return (actual, index)
    }

    /// Big blobs come over several streams, unless an earlier pull left a partial download
    /// to resume.
    private func usesRanges(_ layer: Descriptor) -> Bool {
        rangeStreams > 1 && layer.size >= rangeThreshold && !FileSystem.exists(partialPath(layer.digest))
    }

    /// Several `Range` streams fill a window in memory that the hasher and the decompressor
    /// follow. nil when the registry ignores `Range` (the caller streams instead). The
    /// compressed bytes are not kept: an interrupted pull starts this layer over.
    private func decompressRanged(_ layer: Descriptor, compression: LayerCompression, to output: ScratchTar,
                                  endpoints: [Endpoint], reference: Reference) async throws -> Decompressed? {
        let stream = RangedStream(descriptor: layer)
        // A stream that fails to decompress does not stop the download: the digest, checked
        // at the end, tells a corrupt blob (named with both digests) from a malformed one.
        let decompression = BlockingThreads.task {
            defer { stream.decompressorFinished() }
            return try Self.decompress(layer.digest, compression: compression, source: RangedStreamReader(stream), to: output)
        }
        return try await downloading(into: decompression, fallback: "using one stream") {
            try await stream.fetchAll(client: client, endpoints: endpoints, reference: reference, streams: rangeStreams,
                                      onBytes: progressCounter(layer.digest))
        }
    }

    /// Runs `download` while `decompression` consumes it. nil when the registry ignored
    /// `Range`: the caller goes on with `fallback`. `ended` learns how the download ended,
    /// before the decompression is awaited.
    private func downloading(into decompression: Task<Decompressed, any Error>, fallback: String,
                             ended: (_ error: (any Error)?) -> Void = { _ in },
                             _ download: () async throws -> Void) async throws -> Decompressed? {
        do {
            try await download()
            ended(nil)
        } catch {
            ended(error)
            _ = await decompression.result
            if let error = error as? RegistryError, error.kind == .rangeUnsupported {
                logger.info("\(error.message); \(fallback)")
                return nil
            }
            throw error
        }
        return try await decompression.value
    }

    private func fetchAll(_ blob: RangedBlob, endpoints: [Endpoint], reference: Reference) async throws {
        try await blob.fetchAll(client: client, endpoints: endpoints, reference: reference, streams: rangeStreams,
                                onBytes: progressCounter(blob.descriptor.digest))
    }

    /// Adds up the bytes that concurrent streams report, for the progress display.
    private func progressCounter(_ digest: Digest) -> @Sendable (Int64) -> Void {
        let received = Mutex<Int64>(0)
        let progress = self.progress
        return { bytes in progress?.layerProgress(digest, bytes: received.withLock { $0 += bytes; return $0 }) }
    }

    /// A big uncompressed tar on one plain stream, split as it arrives, through memory
    /// (`PipedBlob`). nil when the registry ignored `Range` while resuming (the caller
    /// starts over with a partial file).
    private func decompressPiped(_ layer: Descriptor, to output: ScratchTar, endpoints: [Endpoint],
                                 reference: Reference) async throws -> Decompressed? {
        let digest = layer.digest
        let progress = self.progress
        let blob = PipedBlob(digest: digest) { bytes in progress?.layerProgress(digest, bytes: bytes) }
        let splitting = BlockingThreads.task {
            defer { blob.readerFinished() }
            return try Self.decompress(digest, compression: .none, source: PipedReader(blob), to: output)
        }
        return try await downloading(into: splitting, fallback: "starting over", ended: { blob.end(error: $0) }) {
            try await client.download(layer, from: endpoints, reference: reference, into: blob)
        }
    }

    /// One resumable stream into `tmp/<hex>.partial`, decompressed as it grows, from the
    /// blocks the partial blob keeps in memory: the file is only for resuming, so it is
    /// written around the page cache.
    private func decompressStreamed(_ layer: Descriptor, compression: LayerCompression, to output: ScratchTar,
                                    endpoints: [Endpoint], reference: Reference) async throws -> Decompressed {
        let partial = try openPartial(layer, direct: true, retaining: true)
        let decompression = BlockingThreads.task {
            try Self.decompress(layer.digest, compression: compression, source: FollowingReader(partial), to: output)
        }
        let started = ContinuousClock.now
        do {
            try await client.download(layer, from: endpoints, reference: reference, into: partial)
            try partial.end()
            logger.debug("\(layer.digest): downloaded \(layer.size) bytes in \(ContinuousClock.now - started)")
        } catch {
            try? partial.end(error: error)
            _ = try? await decompression.value
            if let error = error as? RegistryError, error.kind == .digestMismatch || error.kind == .sizeMismatch {
                try? FileSystem.remove(partial.path)
            }
            throw error
        }
        var actual: Decompressed
        do {
            actual = try await decompression.value
        } catch is PartialBlob.Restarted {
            actual = try await BlockingThreads.task {
                try Self.decompress(layer.digest, compression: compression, source: FileByteSource(path: partial.path), to: output)
            }.value
        } catch let error as LayerError {
            try? FileSystem.remove(partial.path)
            throw error
        }
        logger.debug("\(layer.digest): decompressed and synced in \(ContinuousClock.now - started)")
        return actual
    }

    /// A decompressed layer tar: its digest, its index when following the writer made one,
    /// and the files stored apart (offset → size).
    struct Decompressed: Sendable {
        let diffID: Digest
        let index: LayerIndex?
        let files: [Int64: Int64]
        let sums: StoredSums
    }

    /// Decompresses blob `digest` into `output` (fsynced), split (`LayerSplit`), indexing it
    /// on the way. An uncompressed blob is its own diff_id, already checked by its download:
    /// it is not hashed a second time.
    private static func decompress(_ digest: Digest, compression: LayerCompression, source: ByteSourceAdapter,
                                   to output: ScratchTar) throws -> Decompressed {
        let layer = digest.description
        let known = compression == .none ? digest : nil
        // A decompression started over (a restarted download) leaves nothing of the first.
        if output.apart.exists { try FileSystem.removeTree(output.apart.directory) }
        let file = try BackgroundFileWriter(path: output.tar)
        let writer = LayerSplitWriter(tar: file, apart: output.apart, layer: layer)
        let splitter = TarSplitter(output: writer)
        let indexer = FollowingIndexer(writer: file, path: output.tar, layer: layer)
        var hasher = DigestHasher()
        do {
            try LayerDecompressor.run(layer: layer, compression: compression, source: source) { bytes in
                try splitter.write(bytes)
                if known == nil { hasher.update(bytes) }
            }
            try writer.finish()
        } catch {
            writer.abandon()
            _ = indexer.join()
            throw error
        }
        return Decompressed(diffID: known ?? hasher.finalize(), index: indexer.join(), files: writer.files, sums: writer.sums)
    }
}
