import ImageFS
import Logging
import OCI
import Store

/// The last step of a pull (and of a lazy mount whose blobs have all arrived): records an
/// image whose layers are all in the store: manifest (and index) blobs, the merged tree, the
/// image record, the reference last. Building the tree here refuses an image whose layers do
/// not stack safely (a write through a symlink) before it is recorded, and caches the tree
/// for the first mount.
enum ImageCommit {
    /// `tree`: already merged (a pull merges layers as they arrive).
    static func commit(_ record: ImageRecord, resolved: ResolvedImage, reference: Reference, store: ContentStore, logger: Logger,
                       tree: ImageTree? = nil) async throws {
        try store.writeBlob(resolved.fetched.bytes, digest: resolved.fetched.digest)
        if let bytes = resolved.indexBytes, let digest = resolved.indexDigest { try store.writeBlob(bytes, digest: digest) }
        let trees = ImageTrees(store: store, logger: logger)
        if let tree { trees.cache(tree, of: record) } else { _ = try trees.tree(of: record) }
        try store.writeImage(record)
        try await store.setReference(reference, to: record.digest)
    }
}
