import Foundation

/// A few threads taking jobs from one shared stack until none is queued or running, or one
/// fails. A job may add jobs for any thread to take (`offer`): a directory its
/// subdirectories, a finished directory its parent. One per pass of `unpack`.
final class WorkStack<Job: Sendable>: @unchecked Sendable {
    private let condition = NSCondition()
    private var stack: [Job]
    private let capacity: Int
    /// Jobs queued or being worked on: the pass is over when none are left.
    private var outstanding: Int
    private var running = 0
    private var failure: (any Error)?
    /// What becomes of a job still queued when the pass has failed (closing its descriptor).
    private let drop: @Sendable (Job) -> Void

    /// `capacity`: at most this many queued; `offer` refuses beyond it.
    init(_ jobs: [Job], capacity: Int = .max, drop: @escaping @Sendable (Job) -> Void = { _ in }) {
        stack = jobs
        outstanding = jobs.count
        self.capacity = capacity
        self.drop = drop
    }

    /// Runs `work` over every job on `threads` threads (numbered from 0, passed to `work`) and
    /// returns when all are done. Throws the first failure; the jobs queued after it are
    /// dropped, not worked.
    func run(threads: Int, name: String, _ work: @escaping @Sendable (Job, _ thread: Int) throws -> Void) throws {
        condition.lock()
        running = max(1, threads)
        let count = running
        condition.unlock()
        for n in 0..<count {
            let thread = Thread { [self] in loop { try work($0, n) } }
            thread.name = "\(name)-\(n)"
            thread.stackSize = 512 << 10
            thread.start()
        }
        condition.lock()
        defer { condition.unlock() }
        while running > 0 { condition.wait() }
        if let failure { throw failure }
    }

    /// Queues a job; false when the stack is full or the pass has failed: the caller then
    /// does the job itself (or drops it).
    func offer(_ job: Job) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        guard failure == nil, stack.count < capacity else { return false }
        stack.append(job)
        outstanding += 1
        condition.signal()
        return true
    }

    /// Another thread failed: the rest of the pass is skipped.
    var failed: Bool {
        condition.lock()
        defer { condition.unlock() }
        return failure != nil
    }

    private func loop(_ work: @Sendable (Job) throws -> Void) {
        condition.lock()
        while true {
            while stack.isEmpty, outstanding > 0 { condition.wait() }
            guard let job = stack.popLast() else { break }
            let skip = failure != nil
            condition.unlock()
            var error: (any Error)?
            if skip {
                drop(job)
            } else {
                do { try work(job) } catch let e { error = e }
            }
            condition.lock()
            if let error, failure == nil { failure = error }
            outstanding -= 1
            if outstanding == 0 { condition.broadcast() }
        }
        running -= 1
        condition.broadcast()
        condition.unlock()
    }
}
