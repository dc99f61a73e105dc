import Foundation

/// State that threads and tasks share, guarded by one lock, with a way to wait until it is in
/// a given condition: the one blocking primitive behind imgvol's byte windows, block queues
/// and work stacks. A thread blocks in `wait(until:)`; a task suspends in `next(_:)` without
/// holding a thread of the cooperative pool. An `update` (and a wait that changed the state)
/// wakes every waiter to look again, unless it says that one (all waiting for the same kind
/// of thing, such as work) or none can go on.
///
/// Unchecked: `state`, `suspended` and `nextID` are touched only with `condition` held. Bodies
/// run with it held: they must not block or call back into the monitor.
public final class Monitor<State>: @unchecked Sendable {
    private struct Suspended {
        /// Resumes the task and returns true when the state lets it go on.
        let attempt: (inout State) -> Bool
        let cancel: () -> Void
    }

    private let condition = NSCondition()
    private var state: State
    private var suspended: [UInt64: Suspended] = [:]
    private var nextID: UInt64 = 0

    public init(_ state: State) { self.state = state }

    /// Whom a change lets go on.
    public enum Wake: Sendable {
        /// Anyone: every waiter looks again.
        case all
        /// One blocked thread, when every thread waits for the same kind of thing (a job, a
        /// free block) and this change gives one of them what it waits for.
        case one
        /// No one: the change cannot end any wait (a job taken, a counter that nobody waits on).
        case none
    }

    /// Changes the state and wakes whom `wake` says.
    @discardableResult
    public func update<R>(wake: Wake = .all, _ body: (inout State) throws -> R) rethrows -> R {
        condition.lock()
        defer { condition.unlock() }
        let result = try body(&state)
        self.wake(wake)
        return result
    }

    /// Looks at the state without waking anyone.
    public func read<R>(_ body: (State) throws -> R) rethrows -> R {
        condition.lock()
        defer { condition.unlock() }
        return try body(state)
    }

    /// Blocks this thread until `body` gives a value. `body` may change the state as it takes
    /// its value; whom that lets go on is woken as `wake` says.
    public func wait<R>(wake: Wake = .all, until body: (inout State) throws -> R?) rethrows -> R {
        condition.lock()
        defer { condition.unlock() }
        while true {
            if let value = try body(&state) {
                self.wake(wake)
                return value
            }
            condition.wait()
        }
    }

    /// Suspends the calling task until `body` gives a value, holding no thread meanwhile; nil
    /// when the task is cancelled first.
    public func next<R: Sendable>(_ body: @escaping (inout State) -> R?) async -> R? {
        let id = takeID()
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<R?, Never>) in
                condition.lock()
                defer { condition.unlock() }
                if Task.isCancelled {
                    continuation.resume(returning: nil)
                    return
                }
                if let value = body(&state) {
                    wake(.all)
                    continuation.resume(returning: value)
                    return
                }
                suspended[id] = Suspended(
                    attempt: { state in
                        guard let value = body(&state) else { return false }
                        continuation.resume(returning: value)
                        return true
                    },
                    cancel: { continuation.resume(returning: nil) })
            }
        } onCancel: {
            condition.lock()
            let waiter = suspended.removeValue(forKey: id)
            condition.unlock()
            waiter?.cancel()
        }
    }

    private func takeID() -> UInt64 {
        condition.lock()
        defer { condition.unlock() }
        nextID += 1
        return nextID
    }

    /// Lets every suspended task whose condition now holds go on (each may change the state
    /// for the next), then wakes the blocked threads. Called with the lock held; resuming a
    /// continuation only schedules its task.
    private func wake(_ whom: Wake) {
        if whom == .none { return }
        var resumedOne = !suspended.isEmpty
        while resumedOne {
            resumedOne = false
            for id in suspended.keys.sorted() {
                guard let waiter = suspended[id], waiter.attempt(&state) else { continue }
                suspended[id] = nil
                resumedOne = true
            }
        }
        if whom == .one { condition.signal() } else { condition.broadcast() }
    }
}
