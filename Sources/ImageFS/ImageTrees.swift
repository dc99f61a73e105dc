import FileIO
import Logging
import OCI
import Store

/// The merged trees of stored images: read from their cache file, or built from the layer
/// indexes and cached. A tree depends only on immutable layer indexes, so a cached one never
/// goes stale.
public struct ImageTrees: Sendable {
    public let store: ContentStore
    public let logger: Logger

    public init(store: ContentStore, logger: Logger) {
        self.store = store
        self.logger = logger
    }

    public func tree(of record: ImageRecord) throws -> ImageTree {
        if let bytes = try? FileSystem.readFile(store.treePath(record.digest)) {
            do { return try ImageTree(decoding: bytes) } catch {
                // Derived data: built again from the layer indexes, and the cache rewritten.
                logger.warning("the cached tree of \(record.digest) (\(store.treePath(record.digest))) is damaged (\(error)); building it again")
            }
        }
        let layers = try record.layers.map { (name: $0.digest.description, index: try store.index(of: $0)) }
        let tree = try ImageTree.build(layers: layers)
        cache(tree, of: record)
        return tree
    }

    /// Saves the merged tree for the mounts to come; a tree that cannot be saved is built again
    /// by the next mount.
    public func cache(_ tree: ImageTree, of record: ImageRecord) {
        do { try FileSystem.writeAtomically(tree.encoded(), to: store.treePath(record.digest), tmpDir: store.tmpDir, mode: 0o600) } catch {
            logger.info("could not cache the tree of \(record.digest): \(error)")
        }
    }

    /// Each layer's bytes, in layer order (the tree's layer numbers).
    public func layerData(of record: ImageRecord) throws -> [LayerData] {
        try record.layers.map { try store.layerData(of: $0) }
    }
}
