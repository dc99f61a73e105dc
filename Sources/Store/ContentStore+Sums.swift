import FileIO
import Integrity
import Layers
import OCI
#if canImport(Glibc)
import Glibc
#endif

/// Chunk sums (`StoredSums`): written with the bytes they sum, before the marker that makes a
/// layer or blob present, and read when a mount or `unpack` opens the bytes.
extension ContentStore {
    public func layerSumsPath(_ diffID: Digest) -> String { layout.layerSums(diffID) }
    public func blobSumsPath(_ digest: Digest) -> String { layout.blobSums(digest) }

    /// Where the sums of a layer's bytes are: a tar layer's, or a raw file blob's.
    func sumsPath(of layer: ImageRecord.Layer) -> String {
        layer.file == nil ? layerSumsPath(layer.diffID) : blobSumsPath(layer.digest)
    }

    public func hasSums(of layer: ImageRecord.Layer) -> Bool { FileSystem.exists(sumsPath(of: layer)) }

    /// In the store, with its sums, and not found damaged by a mount: what a pull of a cached
    /// image needs nothing more for.
    public func isServable(_ layer: ImageRecord.Layer) -> Bool {
        hasLayer(layer) && hasSums(of: layer) && !hasReport(layer.file == nil ? layer.diffID : layer.digest)
    }

    public func commitLayerSums(_ sums: StoredSums, diffID: Digest) throws(StoreError) {
        do { try FileSystem.writeAtomically(sums.encoded(), to: layerSumsPath(diffID), tmpDir: tmpDir, mode: 0o600) } catch {
            throw .io(error)
        }
    }

    public func commitBlobSums(_ sums: ChunkSums, digest: Digest) throws(StoreError) {
        do { try FileSystem.writeAtomically(StoredSums(data: sums).encoded(), to: blobSumsPath(digest), tmpDir: tmpDir, mode: 0o600) } catch {
            throw .io(error)
        }
    }

    /// The sums of a layer's bytes. Missing or damaged sums are an error: bytes that cannot be
    /// checked are not served.
    public func readSums(of layer: ImageRecord.Layer) throws(StoreError) -> StoredSums {
        try readSums(at: sumsPath(of: layer),
                     of: layer.file == nil ? "layer \(layer.diffID)" : "file \(layer.file?.path ?? "") (\(layer.digest))")
    }

    /// The sums file at `path`, which belongs to `name` (for the error).
    func readSums(at path: String, of name: String) throws(StoreError) -> StoredSums {
        let bytes: [UInt8]
        do { bytes = try FileSystem.readFile(path) } catch {
            throw StoreError(.corrupt, "\(name) has no chunk checksums (\(path): \(error)); it was stored by an older imgvol "
                + "or they were lost: run `imgvol check --repair` to verify it and record them")
        }
        do { return try StoredSums(decoding: bytes) } catch {
            throw StoreError(.corrupt, "the chunk checksums of \(name) (\(path)) are damaged (\(error)); "
                + "run `imgvol check --repair` to verify the layer and record them again")
        }
    }

    /// Verifies a stored layer or raw file against its digest and records its sums: for bytes
    /// stored without them (an older imgvol) or whose sums were damaged. Nothing is recorded
    /// for bytes that do not verify.
    public func recordSums(of layer: ImageRecord.Layer) throws(StoreError) {
        if layer.file != nil { try recordBlobSums(layer.digest) } else { try recordLayerSums(layer.diffID) }
    }

    public func recordBlobSums(_ digest: Digest) throws(StoreError) {
        let (actual, sums) = try measureBlob(digest)
        guard actual == digest else {
            throw StoreError(.digestMismatch, "stored file \(digest) hashes to \(actual); its chunk checksums were not recorded")
        }
        try commitBlobSums(sums, digest: digest)
    }

    public func recordLayerSums(_ diffID: Digest) throws(StoreError) {
        let index = try readLayerIndex(diffID)
        let (actual, sums) = try measureLayer(diffID, index: index)
        guard actual == diffID else {
            throw StoreError(.digestMismatch, "stored layer \(diffID) hashes to \(actual); its chunk checksums were not recorded")
        }
        try commitLayerSums(sums, diffID: diffID)
    }

    public func hasLayerSums(_ diffID: Digest) -> Bool { FileSystem.exists(layerSumsPath(diffID)) }
    public func hasBlobSums(_ digest: Digest) -> Bool { FileSystem.exists(blobSumsPath(digest)) }

    /// Moves a raw file blob that does not verify aside, with its sums, for a pull to fetch again.
    public func setAsideBlob(_ digest: Digest) throws(StoreError) {
        try setAside([blobPath(digest), blobSumsPath(digest)])
    }

    /// One read of a blob: its digest and its sums as it is now.
    func measureBlob(_ digest: Digest) throws(StoreError) -> (Digest, ChunkSums) {
        let path = blobPath(digest)
        var hasher = DigestHasher()
        var summer = ChunkSummer()
        do {
            try Self.read(path, from: 0, to: nil) { bytes in
                hasher.update(bytes)
                summer.update(bytes)
            }
        } catch { throw StoreError(.io, "\(path) cannot be read: \(error)") }
        return (hasher.finalize(), summer.finish())
    }

    /// One read of a layer: the digest of its tar with each file stored apart put back in its
    /// hole, and the sums of the tar (holes as zeros) and of each file apart, as they are now.
    func measureLayer(_ diffID: Digest, index: LayerIndex) throws(StoreError) -> (Digest, StoredSums) {
        let tar = layerTarPath(diffID)
        var hasher = DigestHasher()
        var tarSummer = ChunkSummer()
        var apartSums: [Int64: ChunkSums] = [:]
        var position: Int64 = 0
        do {
            for entry in index.entries.filter(\.storedApart).sorted(by: { $0.dataOffset < $1.dataOffset }) {
                try Self.read(tar, from: position, to: entry.dataOffset) { bytes in
                    hasher.update(bytes)
                    tarSummer.update(bytes)
                }
                var summer = ChunkSummer()
                try Self.read(layerFiles(diffID).path(offset: entry.dataOffset), from: 0, to: entry.size) { bytes in
                    hasher.update(bytes)
                    summer.update(bytes)
                }
                tarSummer.skip(entry.size)
                apartSums[entry.dataOffset] = summer.finish()
                position = entry.dataOffset + entry.size
            }
            try Self.read(tar, from: position, to: nil) { bytes in
                hasher.update(bytes)
                tarSummer.update(bytes)
            }
        } catch { throw StoreError(.io, "layer \(diffID) cannot be read: \(error)") }
        return (hasher.finalize(), StoredSums(data: tarSummer.finish(), apart: apartSums))
    }

    /// Reads `[start, end)` of a file (`end` nil: to its end), a buffer at a time. A file that
    /// ends early is an error: a truncated piece must not pass as a shorter one.
    static func read(_ path: String, from start: Int64, to end: Int64?, _ body: (UnsafeRawBufferPointer) -> Void) throws(SystemError) {
        let file = try OpenFile.openRead(path)
        defer { file.close() }
        let stop: Int64
        if let end { stop = end } else { stop = try file.size() }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 4096)
        defer { buffer.deallocate() }
        var offset = start
        while offset < stop {
            let want = Int(min(Int64(buffer.count), stop - offset))
            let n = try file.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<want]), at: offset)
            guard n > 0 else { throw SystemError("read", "\(path): ends at \(offset), expected \(stop)", errno: EIO) }
            body(UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
            offset += Int64(n)
        }
    }
}
