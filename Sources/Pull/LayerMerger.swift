import FileIO
import ImageFS
import Layers
import OCI
import Store

/// Merges a pull's layers into the image tree as they arrive, bottom up: a layer is applied
/// once it and every layer below it are in the store, on a blocking thread, while the layers
/// above still download; only what the last layer adds is left for the end of the pull.
/// The applies run one after the other, each waiting for the one before it.
actor LayerMerger {
    private let builder = ImageTree.Builder()
    private let store: ContentStore
    private let plan: PullPlan
    private var diffIDs: [Digest?]
    /// Indexes the fetches handed over, by diff_id; the others are read from the store.
    private var indexes: [Digest: LayerIndex] = [:]
    private var next = 0
    private var merging: Task<Void, any Error>?

    init(plan: PullPlan, store: ContentStore) {
        self.plan = plan
        self.store = store
        diffIDs = Array(repeating: nil, count: plan.layers.count)
    }

    /// The layer `digest` (every position it holds in the image) is in the store; `index` is
    /// its index if the fetch has it in memory.
    func arrived(_ digest: Digest, diffID: Digest, index: LayerIndex? = nil) {
        for position in plan.layers.indices where plan.layers[position].descriptor.digest == digest {
            diffIDs[position] = diffID
        }
        if let index { indexes[diffID] = index }
        var ready: [(layer: ImageRecord.Layer, index: LayerIndex?)] = []
        while next < diffIDs.count, let diffID = diffIDs[next] {
            ready.append((plan.recordLayer(next, diffID: diffID), indexes[diffID]))
            next += 1
        }
        guard !ready.isEmpty else { return }
        let previous = merging
        merging = Task { [builder, store, ready] in
            try await previous?.value
            try await BlockingThreads.run {
                for (layer, index) in ready {
                    // A raw file layer's index comes from its record, whatever a fetch made.
                    let fetched = layer.file == nil ? index : nil
                    try builder.apply(try fetched ?? store.index(of: layer), name: layer.digest.description)
                }
            }
        }
    }

    /// The merged tree, once every layer has arrived; throws what merging refused (a layer
    /// that writes through a symlink).
    func tree() async throws -> ImageTree {
        try await merging?.value
        return try await BlockingThreads.run { [builder] in builder.finish() }
    }
}
