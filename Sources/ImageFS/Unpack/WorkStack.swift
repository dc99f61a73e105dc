import FileIO

/// A few threads taking jobs from one shared stack until none is queued or running, or one
/// fails. A job may add jobs for any thread to take (`offer`): a directory its
/// subdirectories, a finished directory its parent. One per pass of `unpack`.
final class WorkStack<Job: Sendable>: Sendable {
    private struct Jobs {
        var stack: [Job]
        /// Jobs queued or being worked on: the pass is over when none are left.
        var outstanding: Int
        var running = 0
        var failure: (any Error)?
    }

    private let jobs: Monitor<Jobs>
    private let capacity: Int
    /// What becomes of a job still queued when the pass has failed (closing its descriptor).
    private let drop: @Sendable (Job) -> Void

    /// `capacity`: at most this many queued; `offer` refuses beyond it.
    init(_ jobs: [Job], capacity: Int = .max, drop: @escaping @Sendable (Job) -> Void = { _ in }) {
        self.jobs = Monitor(Jobs(stack: jobs, outstanding: jobs.count))
        self.capacity = capacity
        self.drop = drop
    }

    /// Runs `work` over every job on `threads` threads (numbered from 0, passed to `work`) and
    /// returns when all are done. Throws the first failure; the jobs queued after it are
    /// dropped, not worked.
    func run(threads: Int, _ work: @escaping @Sendable (Job, _ thread: Int) throws -> Void) throws {
        let count = max(1, threads)
        jobs.update { $0.running = count }
        for n in 0..<count {
            do {
                try BlockingThreads.start { [self] in loop { try work($0, n) } }
            } catch {
                // The threads already started finish the pass; this one never will.
                jobs.update { jobs in
                    jobs.running -= 1
                    if jobs.failure == nil { jobs.failure = error }
                }
            }
        }
        let failure: (any Error)?? = jobs.wait(wake: .none) { jobs in jobs.running == 0 ? .some(jobs.failure) : nil }
        if let failure, let failure { throw failure }
    }

    /// Queues a job; false when the stack is full or the pass has failed: the caller then
    /// does the job itself (or drops it).
    func offer(_ job: Job) -> Bool {
        let capacity = self.capacity
        // Every thread that waits (but the one in `run`) waits for a job: one is enough.
        return jobs.update(wake: .one) { jobs in
            guard jobs.failure == nil, jobs.stack.count < capacity else { return false }
            jobs.stack.append(job)
            jobs.outstanding += 1
            return true
        }
    }

    /// Another thread failed: the rest of the pass is skipped.
    var failed: Bool { jobs.read { $0.failure != nil } }

    private func loop(_ work: @Sendable (Job) throws -> Void) {
        while true {
            // .some(nil): nothing is left to do.
            let taken: (job: Job, skip: Bool)?? = jobs.wait(wake: .none) { jobs in
                if let job = jobs.stack.popLast() { return .some((job, jobs.failure != nil)) }
                return jobs.outstanding > 0 ? nil : .some(nil)
            }
            guard let taken, let (job, skip) = taken.map({ ($0.job, $0.skip) }) else { break }
            var error: (any Error)?
            if skip {
                drop(job)
            } else {
                do { try work(job) } catch let e { error = e }
            }
            // Only the last job's end (the pass is over) or a failure can end a wait.
            let over = jobs.update(wake: .none) { jobs in
                if let error, jobs.failure == nil { jobs.failure = error }
                jobs.outstanding -= 1
                return jobs.outstanding == 0
            }
            if over { jobs.update { _ in } }
        }
        jobs.update { $0.running -= 1 }
    }
}
