import FileIO
import OCI
import Registry
import Synchronization

/// A few workers fetching the chunks of several blobs: first whatever a reader is waiting for
/// in any blob, then the blobs in order, front to back. One pool for all of a lazy mount's
/// blobs, so a read in the last layer is not queued behind the first layer's download.
public struct RangedFetch: Sendable {
    let blobs: [RangedBlob]
    let client: any RangeSource
    let endpoints: [Endpoint]
    let reference: Reference
    var onBytes: (@Sendable (Int64) -> Void)?
    /// While off, only chunks a reader waits for are fetched.
    let signal: Signal

    /// What idle workers wait on: rung when a reader asks for a chunk, and when the in-order
    /// download is switched on (a lazy mount does once it serves, or at its first read).
    public final class Signal: Sendable {
        struct State {
            var on: Bool
            var rings: UInt64 = 0
        }

        private let state: Monitor<State>
        /// Read without the lock: every FUSE read of a lazy layer turns the switch on.
        private let on: Atomic<Bool>

        public init(on: Bool = false) {
            self.on = Atomic(on)
            state = Monitor(State(on: on))
        }

        public var isOn: Bool { on.load(ordering: .acquiring) }

        public func turnOn() {
            guard !isOn else { return }
            on.store(true, ordering: .releasing)
            state.update { state in
                state.on = true
                state.rings += 1
            }
        }

        /// There may be new work: idle workers look again.
        func ring() { state.update { $0.rings += 1 } }

        var rings: UInt64 { state.read(\.rings) }

        /// Returns once rung after `seen`, or when the task is cancelled.
        func wait(after seen: UInt64) async {
            _ = await state.next { $0.rings > seen ? () : nil }
        }

        /// Returns once the switch is on, or after `limit`.
        public func waitUntilOn(atMost limit: Duration) async {
            await withTaskGroup(of: Void.self) { group in
                group.addTask { [state] in _ = await state.next { $0.on ? () : nil } }
                group.addTask { try? await Task.sleep(for: limit) }
                await group.next()
                group.cancelAll()
            }
        }
    }

    public init(blobs: [RangedBlob], client: any RangeSource, endpoints: [Endpoint], reference: Reference,
                signal: Signal = Signal(on: true), onBytes: (@Sendable (Int64) -> Void)? = nil) {
        self.blobs = blobs
        self.client = client
        self.endpoints = endpoints
        self.reference = reference
        self.signal = signal
        self.onBytes = onBytes
    }

    /// Returns when every chunk is on disk; throws the first download error.
    public func run(streams: Int) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<max(1, streams) {
                group.addTask {
                    while !Task.isCancelled {
                        let seen = signal.rings
                        guard let (blob, chunks) = claim() else {
                            if signal.isOn { return }
                            // Until a reader asks or the mount serves.
                            await signal.wait(after: seen)
                            continue
                        }
                        try await blob.fetch(chunks, client: client, endpoints: endpoints, reference: reference)
                        onBytes?(Int64(blob.range(of: chunks).count))
                    }
                    throw CancellationError()
                }
            }
            try await group.waitForAll()
        }
    }

    private func claim() -> (RangedBlob, Range<Int>)? {
        for blob in blobs { if let chunks = blob.claimUrgent() { return (blob, chunks) } }
        guard signal.isOn else { return nil }
        for blob in blobs { if let chunks = blob.claimNext() { return (blob, chunks) } }
        return nil
    }
}
