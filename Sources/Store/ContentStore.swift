import FileIO
import Integrity
import Layers
import OCI
#if canImport(Glibc)
import Glibc
#endif

/// The on-disk content-addressed cache under `--root` (its paths: `StoreLayout`).
///
/// A layer is one sequential file, not one file per entry: unpacking creates no inodes, and
/// the FUSE server reads file contents at an offset in the tar. Big files are the exception:
/// a file of their own lets the kernel read them without the server (FUSE passthrough).
/// Everything enters by temp + fsync + rename after its digest was checked, so any path that
/// exists is complete.
public final class ContentStore: Sendable {
    public let layout: StoreLayout
    public var root: String { layout.root }

    public var blobsDir: String { layout.blobsDir }
    public var layersDir: String { layout.layersDir }
    public var imagesDir: String { layout.imagesDir }
    public var tmpDir: String { layout.tmpDir }
    public var locksDir: String { layout.locksDir }
    public var mountsDir: String { layout.mountsDir }
    var refsPath: String { layout.refs }

    /// On read-only media: read-only commands (and mounts of cached images) work, writers fail.
    public let isReadOnly: Bool

    public init(root: String) throws(StoreError) {
        var st = statvfs()
        isReadOnly = statvfs(root, &st) == 0 && (st.f_flag & UInt(ST_RDONLY)) != 0
        layout = StoreLayout(root: root, readOnly: isReadOnly)
        if isReadOnly {
            guard FileSystem.isDirectory(layout.imagesDir) else {
                throw StoreError(.io, "\(root) is on read-only media and holds no store (no images/); pass the --root of a store")
            }
            do { try FileSystem.makeDirectories(layout.mountsDir, mode: 0o700) } catch {
                throw StoreError(.io, "the store at \(root) is read-only and its mount records cannot go to \(layout.mountsDir): \(error)")
            }
            return
        }
        do {
            if !FileSystem.exists(self.root) {
                try FileSystem.makeDirectories(FileSystem.parent(of: self.root))
                try FileSystem.makeDirectory(self.root, mode: 0o700)
            }
            guard FileSystem.isDirectory(self.root) else {
                throw StoreError(.io, "store root \(self.root) is not a directory; pass --root DIR")
            }
            try FileSystem.makeDirectories(blobsDir, mode: 0o700)
            for dir in [layersDir, imagesDir, tmpDir, locksDir, mountsDir] {
                try FileSystem.makeDirectory(dir, mode: 0o700)
            }
        } catch let error as SystemError {
            throw StoreError(.io, "cannot create the store at \(self.root): \(error); pass --root DIR or run as root")
        } catch let error as StoreError {
            throw error
        } catch {
            throw StoreError(.io, "\(error)")
        }
    }

    // MARK: blobs

    public func blobPath(_ digest: Digest) -> String { layout.blob(digest) }

    public func hasBlob(_ digest: Digest) -> Bool { FileSystem.exists(blobPath(digest)) }

    /// Reads a small blob and checks it still hashes to its name.
    public func readBlob(_ digest: Digest) throws(StoreError) -> [UInt8] {
        let bytes: [UInt8]
        do { bytes = try FileSystem.readFile(blobPath(digest)) } catch {
            throw StoreError(.notFound, "blob \(digest) is not in the store")
        }
        let actual = Digest.of(bytes)
        guard actual == digest else {
            throw StoreError(.corrupt, "stored blob \(digest) hashes to \(actual); run `imgvol rm` and pull again")
        }
        return bytes
    }

    public func writeBlob(_ bytes: [UInt8], digest: Digest) throws(StoreError) {
        let actual = Digest.of(bytes)
        guard actual == digest else {
            throw StoreError(.digestMismatch, "content does not match its digest: expected \(digest), got \(actual)")
        }
        // An existing file is kept only if it is intact: a corrupt one is replaced.
        if hasBlob(digest), (try? readBlob(digest)) != nil { return }
        do { try FileSystem.writeAtomically(bytes, to: blobPath(digest), tmpDir: tmpDir, mode: 0o600) } catch {
            throw .io(error)
        }
    }

    // MARK: layers

    public func layerTarPath(_ diffID: Digest) -> String { layout.layerTar(diffID) }
    public func layerIndexPath(_ diffID: Digest) -> String { layout.layerIndex(diffID) }
    /// The layer's big files, each named by its offset in the tar (see `LayerSplit`).
    public func layerFiles(_ diffID: Digest) -> ApartFiles { layout.layerFiles(diffID) }

    /// A layer is present once its index is: the index is committed after the tar.
    public func hasLayer(_ diffID: Digest) -> Bool {
        FileSystem.exists(layerIndexPath(diffID)) && FileSystem.exists(layerTarPath(diffID))
    }

    public func hasLayerTar(_ diffID: Digest) -> Bool { FileSystem.exists(layerTarPath(diffID)) }

    /// The file that holds a layer's bytes: its tar, or for a raw artifact file the blob.
    func dataPath(of layer: ImageRecord.Layer) -> String {
        layer.file == nil ? layerTarPath(layer.diffID) : blobPath(layer.digest)
    }

    /// A layer's bytes, opened for a mount or `unpack`: its data file, the files a split tar
    /// keeps apart, and the sums every chunk is checked against before it is used.
    public func layerData(of layer: ImageRecord.Layer) throws(StoreError) -> LayerData {
        let path = dataPath(of: layer)
        let file: OpenFile
        do { file = try OpenFile.openRead(path) } catch {
            throw StoreError(.notFound, "layer \(layer.diffID) of the image is missing from the store (\(error)); pull the image again")
        }
        return LayerData(file: file, apart: layer.file == nil ? layerFiles(layer.diffID) : nil, sums: try readSums(of: layer))
    }

    public func hasLayer(_ layer: ImageRecord.Layer) -> Bool {
        layer.file == nil ? hasLayer(layer.diffID) : hasBlob(layer.digest)
    }

    /// The entries a layer adds to the tree; a raw file's single entry comes from its record.
    public func index(of layer: ImageRecord.Layer) throws(StoreError) -> LayerIndex {
        guard let file = layer.file else { return try readLayerIndex(layer.diffID) }
        return LayerIndex(entries: [LayerEntry(path: file.path, kind: .regular, mode: file.mode, uid: file.uid, gid: file.gid,
                                               mtimeSeconds: file.mtimeSeconds, size: layer.size, dataOffset: 0)])
    }

    /// Moves a verified, fsynced blob file into place (a raw artifact layer: no copy), its
    /// chunk sums first.
    public func commitBlob(from tmpPath: String, digest: Digest, sums: ChunkSums) throws(StoreError) {
        try commitBlobSums(sums, digest: digest)
        do {
            try FileSystem.rename(tmpPath, blobPath(digest))
            FileSystem.syncDirectory(blobsDir)
        } catch { throw .io(error) }
        FSVerity.enable(blobPath(digest))
    }

    public func readLayerIndex(_ diffID: Digest) throws(StoreError) -> LayerIndex {
        do {
            return try LayerIndex(decoding: try FileSystem.readFile(layerIndexPath(diffID)))
        } catch let error as SystemError {
            throw StoreError(.notFound, "layer \(diffID) is not in the store (\(error))")
        } catch {
            throw StoreError(.corrupt, "the index of layer \(diffID) (\(layerIndexPath(diffID))) is damaged (\(error)); "
                + "pull the image again: a pull moves damaged parts aside and fetches them again")
        }
    }

    /// Moves a verified, fsynced file that is a layer's whole tar into place (an uncompressed
    /// layer's blob, or a lazy mount's: no copy), its chunk sums first.
    public func commitLayerTar(from tmpPath: String, diffID: Digest, sums: ChunkSums) throws(StoreError) {
        try commitLayerSums(StoredSums(data: sums), diffID: diffID)
        do {
            try FileSystem.rename(tmpPath, layerTarPath(diffID))
            FileSystem.syncDirectory(layersDir)
        } catch { throw .io(error) }
        FSVerity.enable(layerTarPath(diffID))
    }

    /// Moves a verified, fsynced split tar into place, after the directory of its big files
    /// if it has one: a tar in the store always has its files. Its chunk sums go first.
    public func commitLayerTar(_ scratch: ScratchTar, diffID: Digest, sums: StoredSums) throws(StoreError) {
        try commitLayerSums(sums, diffID: diffID)
        do {
            if scratch.apart.exists {
                let files = layerFiles(diffID).directory
                if FileSystem.exists(files) { try FileSystem.removeTree(files) }
                try FileSystem.rename(scratch.apart.directory, files)
            }
            try FileSystem.rename(scratch.tar, layerTarPath(diffID))
            FileSystem.syncDirectory(layersDir)
        } catch { throw .io(error) }
        if FSVerity.enable(layerTarPath(diffID)) {
            for offset in sums.apart.keys { FSVerity.enable(layerFiles(diffID).path(offset: offset)) }
        }
    }

    /// Removes a layer whose tar turned out not to be one (it will never index).
    public func discardLayerTar(_ diffID: Digest) throws(StoreError) {
        do {
            try FileSystem.remove(layerTarPath(diffID))
            try FileSystem.removeTree(layerFiles(diffID).directory)
            try FileSystem.remove(layerSumsPath(diffID))
        } catch { throw .io(error) }
    }

    public func commitLayerIndex(_ index: LayerIndex, diffID: Digest) throws(StoreError) {
        do { try FileSystem.writeAtomically(index.encoded(), to: layerIndexPath(diffID), tmpDir: tmpDir, mode: 0o600) } catch {
            throw .io(error)
        }
    }

    // MARK: images

    func imagePath(_ digest: Digest) -> String { layout.image(digest) }

    /// The image's merged tree, cached (derived data: safe to delete at any time).
    public func treePath(_ digest: Digest) -> String { layout.tree(digest) }

    public func hasImage(_ digest: Digest) -> Bool { FileSystem.exists(imagePath(digest)) }

    public func readImage(_ digest: Digest) throws(StoreError) -> ImageRecord {
        let bytes: [UInt8]
        do { bytes = try FileSystem.readFile(imagePath(digest)) } catch {
            throw StoreError(.notFound, "image \(digest) is not in the store")
        }
        let damaged = { (why: String) in
            StoreError(.corrupt, "the image record \(self.imagePath(digest)) is damaged (\(why)); "
                + "pull the image again to rewrite it, or `imgvol rm \(digest.hex.prefix(12))` to drop it")
        }
        var record: ImageRecord
        do { record = try JSONCoding.decode(ImageRecord.self, from: bytes, what: "image record \(digest)") } catch {
            throw damaged("\(error)")
        }
        if let stored = record.recordChecksum {
            guard stored == record.computedChecksum else { throw damaged("its content does not match its checksum") }
            record.recordChecksum = nil
        }
        guard record.digest == digest else { throw damaged("it describes \(record.digest)") }
        return record
    }

    public func writeImage(_ record: ImageRecord) throws(StoreError) {
        var sealed = record
        sealed.recordChecksum = record.computedChecksum
        do { try FileSystem.writeAtomically(JSONCoding.encode(sealed, pretty: true), to: imagePath(record.digest), tmpDir: tmpDir, mode: 0o600) } catch {
            throw .io(error)
        }
    }

    /// The image records present; an unreadable `images/` is an error, not "no images".
    public func listImages() throws(StoreError) -> [Digest] {
        let names: [String]
        do { names = try FileSystem.names(in: imagesDir) } catch {
            throw StoreError(.io, "cannot list the store's images in \(imagesDir): \(error)")
        }
        return names.compactMap { name in
            guard name.hasSuffix(".json") else { return nil }
            return try? Digest(hex: String(name.dropLast(5)))
        }.sorted()
    }

    /// Bytes on disk that this image's own files take (layers shared with other images count
    /// for each).
    public func diskUsage(of record: ImageRecord) -> Int64 {
        var total = record.blobs.reduce(0) { $0 + FileSystem.diskUsage(blobPath($1)) }
        for diffID in Set(record.tarLayers.map(\.diffID)) {
            total += FileSystem.diskUsage(layerTarPath(diffID)) + FileSystem.diskUsage(layerIndexPath(diffID))
                + FileSystem.diskUsage(layerFiles(diffID).directory) + FileSystem.diskUsage(layerSumsPath(diffID))
        }
        return total
    }

    // MARK: locks

    func lockPath(_ name: String) -> String { layout.lock(name) }

    public func lock(_ name: String, exclusive: Bool = true) async throws -> StoreLock {
        try await StoreLock.acquire(path: lockPath(name), exclusive: exclusive)
    }

    /// nil when someone else holds it.
    public func tryLock(_ name: String) throws -> StoreLock? {
        try StoreLock.tryAcquire(path: lockPath(name), exclusive: true)
    }

    /// Held shared by every pull and exclusively by GC, so GC never removes a layer that a
    /// running pull has committed but not yet recorded in an image.
    public func gcLock(exclusive: Bool) async throws -> StoreLock {
        try await lock("gc", exclusive: exclusive)
    }
}
