import FileIO
#if canImport(Glibc)
import Glibc
#endif

/// An flock held on `locks/<name>.lock`. The kernel drops it when the process dies, so a
/// `kill -9` can never leave the store locked.
///
/// An exclusive holder unlinks its file on release, so the per-blob and per-mount locks do
/// not pile up; every acquirer checks, once it holds the flock, that its file is still the one
/// at the path (an unlinked file's flock guards nothing) and opens it again if not.
public final class StoreLock: Sendable {
    private let handle: OpenFile
    private let path: String
    private let exclusive: Bool

    private init(handle: OpenFile, path: String, exclusive: Bool) {
        self.handle = handle
        self.path = path
        self.exclusive = exclusive
    }

    /// Waits without blocking a thread of the cooperative pool: tries again with a growing
    /// delay. The holder is usually another process, and the only event for its release is
    /// a blocking flock, which would hold a thread for as long as the other pull runs and
    /// could not be cancelled.
    static func acquire(path: String, exclusive: Bool) async throws -> StoreLock {
        var delay: UInt64 = 5_000_000
        while true {
            if let lock = try tryAcquire(path: path, exclusive: exclusive) { return lock }
            try await Task.sleep(nanoseconds: delay)
            delay = min(delay * 2, 100_000_000)
        }
    }

    /// nil when someone else holds it.
    static func tryAcquire(path: String, exclusive: Bool) throws -> StoreLock? {
        while true {
            let handle = try OpenFile(path: path, flags: O_RDWR | O_CREAT, mode: 0o600)
            guard try handle.tryLock(exclusive: exclusive) else { return nil }
            if try isStillAtPath(handle, path) { return StoreLock(handle: handle, path: path, exclusive: exclusive) }
            // The previous holder unlinked it between our open and our flock: take the new file.
        }
    }

    private static func isStillAtPath(_ handle: OpenFile, _ path: String) throws -> Bool {
        var held = stat(), named = stat()
        if let error = failure(of: { fstat(handle.fd, &held) }) { throw SystemError("fstat", path, errno: error) }
        guard failure(of: { stat(path, &named) }) == nil else { return false }
        return held.st_dev == named.st_dev && held.st_ino == named.st_ino
    }

    public func release() {
        // Unlinked while still held: nobody can lock this file and believe it is the lock.
        if exclusive { _ = unlink(path) }
        handle.close()
    }
}
