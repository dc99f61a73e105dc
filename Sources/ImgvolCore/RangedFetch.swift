import OCI
import Registry
import Synchronization

/// A few workers fetching the chunks of several blobs: first whatever a reader is waiting for
/// in any blob, then the blobs in order, front to back. One pool for all of a lazy mount's
/// blobs, so a read in the last layer is not queued behind the first layer's download.
struct RangedFetch: Sendable {
    let blobs: [RangedBlob]
    let client: RegistryClient
    let endpoints: [Endpoint]
    let reference: Reference
    var onBytes: (@Sendable (Int64) -> Void)?
    /// While off, only chunks a reader waits for are fetched.
    let background: Switch

    /// Whether the in-order download runs (a lazy mount turns it on once it serves). Atomic:
    /// every FUSE read of a lazy layer turns it on.
    final class Switch: Sendable {
        private let on: Atomic<Bool>

        init(on: Bool = false) { self.on = Atomic(on) }

        var isOn: Bool { on.load(ordering: .acquiring) }

        func turnOn() { on.store(true, ordering: .releasing) }

        /// Returns once the switch is on, or after `limit`.
        func waitUntilOn(atMost limit: Duration) async {
            let deadline = ContinuousClock.now + limit
            while !isOn, ContinuousClock.now < deadline {
                try? await Task.sleep(for: .milliseconds(5))
            }
        }
    }

    init(blobs: [RangedBlob], client: RegistryClient, endpoints: [Endpoint], reference: Reference,
         background: Switch = Switch(on: true), onBytes: (@Sendable (Int64) -> Void)? = nil) {
        self.blobs = blobs
        self.client = client
        self.endpoints = endpoints
        self.reference = reference
        self.background = background
        self.onBytes = onBytes
    }

    /// Returns when every chunk is on disk; throws the first download error.
    func run(streams: Int) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<max(1, streams) {
                group.addTask {
                    while true {
                        guard let (blob, chunks) = claim() else {
                            if background.isOn { return }
                            // Waiting for a reader or for the mount to serve.
                            try await Task.sleep(nanoseconds: 1_000_000)
                            continue
                        }
                        try await blob.fetch(chunks, client: client, endpoints: endpoints, reference: reference)
                        onBytes?(Int64(blob.range(of: chunks).count))
                    }
                }
            }
            try await group.waitForAll()
        }
    }

    private func claim() -> (RangedBlob, Range<Int>)? {
        for blob in blobs { if let chunks = blob.claimUrgent() { return (blob, chunks) } }
        guard background.isOn else { return nil }
        for blob in blobs { if let chunks = blob.claimNext() { return (blob, chunks) } }
        return nil
    }
}
