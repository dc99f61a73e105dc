@testable import CSI
import FileIO
import OCI
import Store
import Synchronization
import Testing

@Suite("KeyedLock")
struct KeyedLockTests {
    /// A second caller of a held key waits for the holder to release it.
    @Test func oneKeyRunsOneAtATime() async throws {
        let lock = KeyedLock<String>()
        let order = Locked<[String]>([])
        let release = PullCoordinatorTests.Gate()
        let holder = Task {
            try await lock.withLock("a") {
                order.withLock { $0.append("first in") }
                await release.wait()
                order.withLock { $0.append("first out") }
            }
        }
        while await !lock.isHeld("a") { await Task.yield() }
        let second = Task { try await lock.withLock("a") { order.withLock { $0.append("second in") } } }
        while await lock.queued("a") == 0 { await Task.yield() }
        #expect(order.withLock { $0 } == ["first in"], "the second caller is queued, not running")
        release.open()
        try await holder.value
        try await second.value
        #expect(order.withLock { $0 } == ["first in", "first out", "second in"])
        #expect(await !lock.isHeld("a"))
    }

    /// Another key is taken and released while the first is held (a lock for all keys
    /// would make this wait for ever: the time limit fails it).
    @Test(.timeLimit(.minutes(1))) func otherKeysRunInParallel() async throws {
        let lock = KeyedLock<String>()
        let inner = try await lock.withLock("a") {
            try await Task { try await lock.withLock("b") { await lock.isHeld("a") } }.value
        }
        #expect(inner, "b ran while a was held")
        #expect(await !lock.isHeld("a"))
        #expect(await !lock.isHeld("b"))
    }

    @Test func releasedOnError() async {
        let lock = KeyedLock<String>()
        struct Boom: Error {}
        await #expect(throws: Boom.self) { try await lock.withLock("k") { throw Boom() } }
        #expect(await !lock.isHeld("k"))
    }
}

@Suite("PullCoordinator")
struct PullCoordinatorTests {
    static func record(_ n: UInt8) -> ImageRecord {
        ImageRecord(digest: .of([n]), manifestMediaType: "m", indexDigest: nil, configDigest: .of([n, n]), layers: [],
                    platform: "linux/amd64", created: nil, pulledAt: "now")
    }

    /// A gate the fake pull waits on, so the test decides when it completes.
    final class Gate: Sendable {
        let stream: AsyncStream<Void>
        let continuation: AsyncStream<Void>.Continuation
        init() { (stream, continuation) = AsyncStream.makeStream() }
        func open() { continuation.finish() }
        func wait() async { for await _ in stream {} }
    }

    @Test func concurrentCallersShareOnePull() async throws {
        let coordinator = PullCoordinator()
        let starts = Locked(0)
        let gate = Gate()
        let key = PullCoordinator.Key(image: "r/i:1", platform: "linux/amd64")
        let start: @Sendable () async throws -> ImageRecord = {
            starts.withLock { $0 += 1 }
            await gate.wait()
            return Self.record(1)
        }
        async let first = coordinator.pull(key, start: start)
        async let second = coordinator.pull(key, start: start)
        // Both calls have joined before the pull may finish.
        while await coordinator.callerCount(key) < 2 { await Task.yield() }
        gate.open()
        let results = try await [first, second]
        #expect(results == [Self.record(1), Self.record(1)])
        #expect(starts.withLock { $0 } == 1)
    }

    /// The RPC's deadline passes (its task is cancelled): it returns at once, the pull goes
    /// on, and a retry joins it and gets its result.
    @Test func aCancelledCallerLeavesThePullRunningAndARetryJoinsIt() async throws {
        let coordinator = PullCoordinator()
        let starts = Locked(0)
        let gate = Gate()
        let key = PullCoordinator.Key(image: "r/i:1", platform: "linux/amd64")
        let start: @Sendable () async throws -> ImageRecord = {
            starts.withLock { $0 += 1 }
            await gate.wait()
            return Self.record(2)
        }
        let rpc = Task { try await coordinator.pull(key, start: start) }
        while await !coordinator.isRunning(key) { await Task.yield() }
        rpc.cancel()
        await #expect(throws: CancellationError.self) { try await rpc.value }
        #expect(await coordinator.isRunning(key), "the pull survives the cancelled call")

        let retry = Task { try await coordinator.pull(key, start: start) }
        while await coordinator.callerCount(key) < 2 { await Task.yield() }
        gate.open()
        #expect(try await retry.value == Self.record(2))
        #expect(starts.withLock { $0 } == 1, "the retry joined the running pull")
        while await coordinator.isRunning(key) { await Task.yield() }
    }

    @Test func aFailedPullIsNotReusedByTheNextCall() async throws {
        let coordinator = PullCoordinator()
        let key = PullCoordinator.Key(image: "r/i:1", platform: "linux/amd64")
        struct Offline: Error {}
        await #expect(throws: Offline.self) { try await coordinator.pull(key) { throw Offline() } }
        while await coordinator.isRunning(key) { await Task.yield() }
        #expect(try await coordinator.pull(key) { Self.record(3) } == Self.record(3))
    }
}

/// Shared mutable state for test closures (a `Mutex` cannot be captured by an escaping closure).
final class Locked<T: Sendable>: Sendable {
    private let mutex: Mutex<T>
    init(_ value: T) { mutex = Mutex(value) }
    func withLock<R>(_ body: (inout T) -> R) -> R { mutex.withLock { body(&$0) } }
}
