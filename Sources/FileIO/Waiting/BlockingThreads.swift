import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The one place blocking work gets a thread: libarchive, hashing that waits for chunks, a
/// FUSE session loop, the writer behind a decompressor, unpack's workers. Never a thread of
/// the cooperative pool, which has only as many threads as cores: one blocked there would
/// stall the downloads it is waiting for.
///
/// Threads are kept for reuse once idle (up to `keptIdle`). At most `limit` exist at once;
/// past that a job is refused (`EAGAIN`, as `pthread_create` would) rather than queued: these
/// jobs wait on one another (a decompressor on its writer, an indexer on both), so a queue
/// behind the cap could deadlock. A pull uses about five threads per layer in flight.
public enum BlockingThreads {
    public static let limit = 256
    static let keptIdle = 16
    static let stackSize = 2 << 20

    private struct Pool {
        var threads = 0
        var idle = 0
        var jobs: [@Sendable () -> Void] = []
    }

    private static let pool = Monitor(Pool())

    /// Runs `body` on a blocking thread and returns what it returns.
    public static func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            do {
                try start { continuation.resume(with: Result { try body() }) }
            } catch {
                continuation.resume(throwing: error)
            }
        }
    }

    /// `run` as a task, for work that is started now and awaited later.
    public static func task<T: Sendable>(_ body: @escaping @Sendable () throws -> T) -> Task<T, any Error> {
        Task { try await run(body) }
    }

    /// Starts `job` on a blocking thread; whoever needs its end waits for it on their own terms.
    public static func start(_ job: @escaping @Sendable () -> Void) throws(SystemError) {
        // Idle threads all wait for a job: one is woken for this one.
        let spawn: Bool? = pool.update(wake: .one) { pool in
            if pool.idle > 0 {
                pool.idle -= 1
                pool.jobs.append(job)
                return false
            }
            guard pool.threads < limit else { return nil }
            pool.threads += 1
            return true
        }
        guard let spawn else { throw SystemError("start a blocking thread (\(limit) are busy)", "", errno: EAGAIN) }
        guard spawn else { return }
        let thread = Thread { work(first: job) }
        thread.name = "imgvol-blocking"
        thread.stackSize = stackSize
        thread.start()
    }

    private static func work(first: @escaping @Sendable () -> Void) {
        var job = first
        while true {
            job()
            let stays = pool.update(wake: .none) { pool in
                guard pool.idle < keptIdle else {
                    pool.threads -= 1
                    return false
                }
                pool.idle += 1
                return true
            }
            guard stays else { return }
            job = pool.wait(wake: .none) { pool in pool.jobs.isEmpty ? nil : pool.jobs.removeFirst() }
        }
    }
}
