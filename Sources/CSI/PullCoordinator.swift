import OCI
import Store
import Synchronization

/// Runs image pulls outside the RPCs that ask for them.
///
/// A model image can take longer to pull than kubelet's NodePublishVolume deadline (about two
/// minutes). grpc-swift cancels a handler's task when its deadline passes, and a pull running
/// in that task would be cancelled with it, so every retry would start (and lose) the same
/// download again. Here the pull is an unstructured task owned by this actor, keyed by image
/// and platform: the RPC only waits for it, stops waiting when cancelled, and a retry with the
/// same arguments joins the running pull and returns when it completes. Callers that ask for
/// the same image at once share one pull.
actor PullCoordinator {
    struct Key: Hashable, Sendable {
        var image: String
        var platform: String
    }

    private var running: [Key: Task<ImageRecord, any Error>] = [:]
    /// Calls that have asked for each running pull, the first included.
    private var callers: [Key: Int] = [:]

    init() {}

    /// The pull for `key`: joined if one runs, else started with `start`. Throws
    /// `CancellationError` when the calling task is cancelled; the pull itself goes on.
    func pull(_ key: Key, start: @escaping @Sendable () async throws -> ImageRecord) async throws -> ImageRecord {
        let task: Task<ImageRecord, any Error>
        if let existing = running[key] {
            task = existing
            callers[key, default: 1] += 1
        } else {
            callers[key] = 1
            task = Task.detached { try await start() }
            running[key] = task
            Task { [weak self] in
                _ = await task.result
                await self?.finished(key, task)
            }
        }
        return try await Self.waitCancellably(for: task)
    }

    var inFlight: Int { running.count }

    func isRunning(_ key: Key) -> Bool { running[key] != nil }

    /// How many calls have asked for the running pull of `key` (0 when none runs).
    func callerCount(_ key: Key) -> Int { running[key] == nil ? 0 : callers[key] ?? 0 }

    private func finished(_ key: Key, _ task: Task<ImageRecord, any Error>) {
        if running[key] == task {
            running[key] = nil
            callers[key] = nil
        }
    }

    /// `await task.value` ignores the waiter's cancellation; this returns at once when the
    /// waiter is cancelled, leaving the task running.
    static func waitCancellably<T: Sendable>(for task: Task<T, any Error>) async throws -> T {
        let waiter = OneShot<T>()
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                waiter.install(continuation)
                Task { waiter.resolve(await task.result) }
            }
        } onCancel: {
            waiter.resolve(.failure(CancellationError()))
        }
    }
}

/// A continuation resumed exactly once, by whichever comes first: the result or the
/// cancellation (which may even arrive before the continuation is installed).
final class OneShot<T: Sendable>: Sendable {
    private enum State {
        case idle
        case waiting(CheckedContinuation<T, any Error>)
        case resolved(Result<T, any Error>)
        case done
    }

    private let state = Mutex<State>(.idle)

    func install(_ continuation: CheckedContinuation<T, any Error>) {
        let early: Result<T, any Error>? = state.withLock { state in
            switch state {
            case .idle:
                state = .waiting(continuation)
                return nil
            case .resolved(let result):
                state = .done
                return result
            case .waiting, .done:
                return nil
            }
        }
        if let early { continuation.resume(with: early) }
    }

    func resolve(_ result: Result<T, any Error>) {
        let waiting: CheckedContinuation<T, any Error>? = state.withLock { state in
            switch state {
            case .idle:
                state = .resolved(result)
                return nil
            case .waiting(let continuation):
                state = .done
                return continuation
            case .resolved, .done:
                return nil
            }
        }
        waiting?.resume(with: result)
    }
}
