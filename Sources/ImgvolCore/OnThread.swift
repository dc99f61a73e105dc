import Foundation

/// Runs blocking work (libarchive, a FUSE session loop, hashing that waits for chunks) on a
/// thread of its own, never on a thread of the cooperative pool, which has only as many
/// threads as cores: one blocked there would stall the downloads it is waiting for.
func onThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) -> Task<T, any Error> {
    Task {
        try await withCheckedThrowingContinuation { continuation in
            let thread = Thread {
                continuation.resume(with: Result { try body() })
            }
            thread.stackSize = 1 << 20
            thread.start()
        }
    }
}
