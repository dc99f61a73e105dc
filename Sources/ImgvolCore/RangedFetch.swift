import OCI
import Registry

/// A few workers fetching the chunks of several blobs: first whatever a reader is waiting for
/// in any blob, then the blobs in order, front to back. One pool for all of a lazy mount's
/// blobs, so a read in the last layer is not queued behind the first layer's download.
struct RangedFetch: Sendable {
    let blobs: [RangedBlob]
    let client: RegistryClient
    let endpoints: [Endpoint]
    let reference: Reference
    var onBytes: (@Sendable (Int64) -> Void)?

    init(blobs: [RangedBlob], client: RegistryClient, endpoints: [Endpoint], reference: Reference,
         onBytes: (@Sendable (Int64) -> Void)? = nil) {
        self.blobs = blobs
        self.client = client
        self.endpoints = endpoints
        self.reference = reference
        self.onBytes = onBytes
    }

    /// Returns when every chunk is on disk; throws the first download error.
    func run(streams: Int) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<max(1, streams) {
                group.addTask {
                    while let (blob, chunk) = claim() {
                        try await blob.fetch(chunk, client: client, endpoints: endpoints, reference: reference)
                        onBytes?(Int64(blob.range(of: chunk).count))
                    }
                }
            }
            try await group.waitForAll()
        }
    }

    private func claim() -> (RangedBlob, Int)? {
        for blob in blobs { if let chunk = blob.claimUrgent() { return (blob, chunk) } }
        for blob in blobs { if let chunk = blob.claimNext() { return (blob, chunk) } }
        return nil
    }
}
