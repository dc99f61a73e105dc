import FileIO
import ImageFS
import Layers
import Logging
import OCI
import Registry
import Store

/// What the commands share: resolving a reference to a cached image (pulling per policy),
/// building its tree, listing, removing.
public struct ImageService: Sendable {
    public enum PullPolicy: String, Sendable, CaseIterable {
        case always, missing, never
    }

    public let store: ContentStore
    public let logger: Logger

    public init(store: ContentStore, logger: Logger) {
        self.store = store
        self.logger = logger
    }

    /// The cached image for `reference` on `platform`, pulling it first when the policy asks.
    public func image(_ reference: Reference, platform: Platform, policy: PullPolicy, puller: () -> Puller) async throws -> ImageRecord {
        if policy != .always, let cached = cachedImage(reference, platform: platform) { return cached }
        guard policy != .never else {
            throw PullError(.notCached, "image \(reference) is not in the store at \(store.root) and --pull=never was given; pull it first")
        }
        return try await puller().pull(reference)
    }

    /// An image whose every layer is present.
    public func cachedImage(_ reference: Reference) -> ImageRecord? {
        let digest = reference.digest.flatMap { d in store.hasImage(d) ? d : nil } ?? store.digest(for: reference)
        guard let digest, let record = try? store.readImage(digest),
              record.layers.allSatisfy({ store.hasLayer($0) }) else { return nil }
        return record
    }

    /// A complete cached image of `reference` for `platform`. A reference names the manifest
    /// pulled last, whatever its platform, so for a multi-arch reference the other manifests
    /// of the same index are looked at too.
    public func cachedImage(_ reference: Reference, platform: Platform) -> ImageRecord? {
        guard let record = cachedImage(reference) else { return nil }
        if Self.runs(record, on: platform) { return record }
        guard let index = record.indexDigest else { return nil }
        for digest in store.listImages() {
            guard let sibling = try? store.readImage(digest), sibling.indexDigest == index, Self.runs(sibling, on: platform),
                  sibling.layers.allSatisfy({ store.hasLayer($0) }) else { continue }
            return sibling
        }
        return nil
    }

    /// Images without a platform in their config (artifacts) run anywhere.
    public static func runs(_ record: ImageRecord, on platform: Platform) -> Bool {
        guard let text = record.platform, let recorded = try? Platform(parsing: text) else { return true }
        return platform.matches(recorded)
    }

    /// Finds a cached image by reference text, full digest, or digest prefix (as `podman rmi` does).
    public func lookup(_ text: String) throws -> (names: [String], record: ImageRecord) {
        let refs = store.references()
        if let reference = try? Reference(text), let digest = refs[reference.description] ?? reference.digest.flatMap({ store.hasImage($0) ? $0 : nil }) {
            return (refs.filter { $0.value == digest }.map(\.key).sorted(), try store.readImage(digest))
        }
        let hex = text.hasPrefix("sha256:") ? String(text.dropFirst(7)) : text
        if hex.count >= 6, hex.allSatisfy(\.isHexDigit) {
            let matches = store.listImages().filter { $0.hex.hasPrefix(hex) }
            if matches.count == 1, let digest = matches.first {
                return (refs.filter { $0.value == digest }.map(\.key).sorted(), try store.readImage(digest))
            }
        }
        _ = try Reference(text)
        throw StoreError(.notFound, "image \(text) is not in the store at \(store.root); see `imgvol images`")
    }

    /// The merged tree, from its cache file when there is one; built from the layer indexes
    /// (and cached) otherwise. The tree depends only on immutable layer indexes, so a cached
    /// one never goes stale.
    public func tree(of record: ImageRecord) throws -> ImageTree {
        if let bytes = try? FileSystem.readFile(store.treePath(record.digest)), let tree = try? ImageTree(decoding: bytes) { return tree }
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

    /// The files holding each layer's bytes, in layer order (the tree's layer numbers).
    public func layerFiles(of record: ImageRecord) -> [String] {
        record.layers.map { store.dataPath(of: $0) }
    }
}
