import FileIO
#if canImport(Glibc)
import Glibc
#endif

/// An flock held on `locks/<name>.lock`. The kernel drops it when the process dies, so a
/// `kill -9` can never leave the store locked.
public final class StoreLock: Sendable {
    private let handle: OpenFile

    init(handle: OpenFile) { self.handle = handle }

    /// Waits without blocking a thread of the cooperative pool: tries again with a growing
    /// delay. The holder is usually another process, and the only event for its release is
    /// a blocking flock, which would hold a thread for as long as the other pull runs and
    /// could not be cancelled.
    static func acquire(path: String, exclusive: Bool) async throws -> StoreLock {
        let handle = try OpenFile(path: path, flags: O_RDWR | O_CREAT, mode: 0o600)
        var delay: UInt64 = 5_000_000
        while try !handle.tryLock(exclusive: exclusive) {
            try await Task.sleep(nanoseconds: delay)
            delay = min(delay * 2, 100_000_000)
        }
        return StoreLock(handle: handle)
    }

    static func tryAcquire(path: String, exclusive: Bool) throws -> StoreLock? {
        let handle = try OpenFile(path: path, flags: O_RDWR | O_CREAT, mode: 0o600)
        return try handle.tryLock(exclusive: exclusive) ? StoreLock(handle: handle) : nil
    }

    public func release() { handle.close() }
}
