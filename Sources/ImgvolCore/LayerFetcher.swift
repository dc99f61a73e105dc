import FileIO
import Foundation
import Layers
import Logging
import OCI
import Registry
import Store
#if canImport(Glibc)
import Glibc
#endif

/// Brings one layer into the store: download (resumable, verified), decompress alongside the
/// download, check the diff_id, commit the uncompressed tar, index it.
struct LayerFetcher: Sendable {
    let store: ContentStore
    let client: RegistryClient
    let logger: Logger
    let progress: (any PullProgress)?

    func fetch(_ layer: Descriptor, diffID: Digest, endpoints: [Endpoint], reference: Reference) async throws {
        guard let compression = LayerCompression(layerMediaType: layer.mediaType) else {
            throw PullError(.invalidImage, "layer \(layer.digest) of \(reference) has media type \(layer.mediaType), which is not a tar layer imgvol can unpack")
        }
        let lock = try await store.lock("layer-\(diffID.hex)")
        defer { lock.release() }
        if store.hasLayer(diffID) {
            progress?.layerFinished(layer.digest, cached: true)
            return
        }
        if !store.hasLayerTar(diffID) {
            progress?.layerStarted(layer.digest, size: layer.size)
            if compression == .none {
                try await fetchUncompressed(layer, diffID: diffID, endpoints: endpoints, reference: reference)
            } else {
                try await fetchCompressed(layer, compression: compression, diffID: diffID, endpoints: endpoints, reference: reference)
            }
        }
        let indexing = ContinuousClock.now
        let index: LayerIndex
        do {
            index = try LayerIndexer.index(tarPath: store.layerTarPath(diffID), layer: layer.digest.description)
        } catch {
            // A verified blob that is not a valid tar will never become one: drop it.
            try? FileSystem.remove(store.layerTarPath(diffID))
            throw error
        }
        try store.commitLayerIndex(index, diffID: diffID)
        logger.debug("\(layer.digest): indexed \(index.entries.count) entries in \(ContinuousClock.now - indexing)")
        progress?.layerFinished(layer.digest, cached: false)
    }

    private func partialPath(_ digest: Digest) -> String { "\(store.tmpDir)/\(digest.hex).partial" }

    private func openPartial(_ layer: Descriptor, direct: Bool) throws -> PartialBlob {
        let digest = layer.digest
        let progress = self.progress
        return try PartialBlob(path: partialPath(digest), direct: direct) { bytes in progress?.layerProgress(digest, bytes: bytes) }
    }

    /// The blob is the layer tar: verified, it is renamed into place. No copy.
    private func fetchUncompressed(_ layer: Descriptor, diffID: Digest, endpoints: [Endpoint], reference: Reference) async throws {
        let partial = try openPartial(layer, direct: true)
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
        guard layer.digest == diffID else {
            try? FileSystem.remove(partial.path)
            throw PullError(.diffIDMismatch, "layer \(layer.digest) of \(reference) is uncompressed, but the image config lists diff_id \(diffID) for it; the image is inconsistent")
        }
        try partial.handle.sync()
        try store.commitLayerTar(from: partial.path, diffID: diffID)
    }

    private func fetchCompressed(_ layer: Descriptor, compression: LayerCompression, diffID: Digest,
                                 endpoints: [Endpoint], reference: Reference) async throws {
        let partial = try openPartial(layer, direct: false)
        let output = "\(store.tmpDir)/\(diffID.hex).\(getpid()).untar"
        defer { try? FileSystem.remove(output) }
        let name = layer.digest.description

        let decompression = Self.onThread {
            try Self.decompress(layer: name, compression: compression, source: FollowingReader(partial), to: output)
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
        var actual: Digest
        do {
            actual = try await decompression.value
        } catch is PartialBlob.Restarted {
            actual = try await Self.onThread {
                try Self.decompress(layer: name, compression: compression, source: FileByteSource(path: partial.path), to: output)
            }.value
        } catch let error as LayerError {
            try? FileSystem.remove(partial.path)
            throw error
        }
        logger.debug("\(layer.digest): decompressed and synced in \(ContinuousClock.now - started)")
        guard actual == diffID else {
            try? FileSystem.remove(partial.path)
            throw PullError(.diffIDMismatch, "layer \(layer.digest) of \(reference) uncompresses to \(actual), but the image config says diff_id \(diffID); the image is inconsistent, nothing was stored")
        }
        try store.commitLayerTar(from: output, diffID: diffID)
        try? FileSystem.remove(partial.path)
    }

    /// Decompresses into `output` (fsynced), returning the uncompressed digest.
    private static func decompress(layer: String, compression: LayerCompression, source: ByteSourceAdapter, to output: String) throws -> Digest {
        let file = try DirectWriter(path: output)
        var hasher = DigestHasher()
        try LayerDecompressor.run(layer: layer, compression: compression, source: source) { bytes in
            try file.write(bytes)
            hasher.update(bytes)
        }
        try file.finish()
        return hasher.finalize()
    }

    /// libarchive is blocking; run it on its own thread so the download keeps flowing.
    static func onThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) -> Task<T, any Error> {
        Task {
            try await withCheckedThrowingContinuation { continuation in
                let thread = Thread {
                    continuation.resume(with: Result { try body() })
                }
                thread.stackSize = 1 << 20
                thread.start()
            }
        }
    }
}
