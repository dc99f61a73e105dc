import FileIO
import Layers
import OCI

/// Damaged parts are moved aside, never deleted: `damaged/` keeps them for a look (and for
/// `prune` to reclaim), and what is gone from its place is fetched again by the next pull.
extension ContentStore {
    /// A part of a layer that was moved aside, and why.
    public struct SetAside: Sendable, CustomStringConvertible {
        public let layer: Digest
        public let reason: String
        public var description: String { "layer \(layer): \(reason)" }
    }

    /// Moves aside every tar layer of `record` whose index does not decode, with its tar and
    /// files (a tar whose index was torn cannot be trusted either), so that the pull that
    /// follows fetches it again. Returns what was moved.
    public func setAsideDamagedLayers(of record: ImageRecord) throws(StoreError) -> [SetAside] {
        var moved: [SetAside] = []
        for layer in record.tarLayers where FileSystem.exists(layerIndexPath(layer.diffID)) {
            let reason: String
            do {
                _ = try LayerIndex(decoding: try FileSystem.readFile(layerIndexPath(layer.diffID)))
                continue
            } catch let error as SystemError {
                reason = "its index cannot be read (\(error))"
            } catch {
                reason = "its index does not decode (\(error))"
            }
            try setAside([layerIndexPath(layer.diffID), layerSumsPath(layer.diffID), layerTarPath(layer.diffID), layerFiles(layer.diffID).directory])
            moved.append(SetAside(layer: layer.diffID, reason: reason))
        }
        return moved
    }

    /// Whether a tar found without its index (a pull or a removal cut short) can be indexed as
    /// the layer: only a whole tar that hashes to its diff_id. A split tar has holes where its
    /// big files were, and without the index nobody knows that its files are all there.
    public func storedTarIsWhole(_ diffID: Digest) -> Bool {
        guard !layerFiles(diffID).exists else { return false }
        var hasher = DigestHasher()
        do { try Self.read(layerTarPath(diffID), from: 0, to: nil) { hasher.update($0) } } catch { return false }
        return hasher.finalize() == diffID
    }

    /// Moves a layer's files aside (see `storedTarIsWhole`).
    public func setAsideLayer(_ diffID: Digest) throws(StoreError) {
        try setAside([layerIndexPath(diffID), layerSumsPath(diffID), layerTarPath(diffID), layerFiles(diffID).directory])
    }

    /// Index first: a layer is present only while its index is. Every directory a rename
    /// touched is synced before this returns, damaged/ before the places the parts left: a
    /// crash after it cannot bring a damaged part back to where it would be trusted again.
    func setAside(_ paths: [String]) throws(StoreError) {
        let stamp = UTCTimestamp.now().filter { $0.isNumber }
        do {
            try FileSystem.makeDirectory(layout.damagedDir, mode: 0o700)
            FileSystem.syncDirectory(layout.root)
            var sources: [String] = []
            for path in paths where FileSystem.exists(path) {
                let name = path.split(separator: "/").last.map(String.init) ?? "part"
                try FileSystem.rename(path, "\(layout.damagedDir)/\(name).\(stamp)")
                let parent = path.lastIndex(of: "/").map { $0 == path.startIndex ? "/" : String(path[..<$0]) } ?? "."
                if !sources.contains(parent) { sources.append(parent) }
            }
            FileSystem.syncDirectory(layout.damagedDir)
            for directory in sources { FileSystem.syncDirectory(directory) }
        } catch {
            throw StoreError(.io, "cannot move damaged parts aside to \(layout.damagedDir): \(error)")
        }
    }
}
