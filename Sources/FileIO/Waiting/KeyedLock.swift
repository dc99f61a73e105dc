/// An async mutex per key: calls for one volume run one at a time (kubelet may retry a
/// publish while the first attempt still runs, or unpublish while it publishes; podman may
/// remove a volume while its mount still pulls), while calls for different volumes run in
/// parallel. Waiters are served in arrival order; a key's entry
/// disappears when nobody holds or waits for it.
public actor KeyedLock<Key: Hashable & Sendable> {
    private var waiters: [Key: [CheckedContinuation<Void, Never>]] = [:]

    public init() {}

    public func acquire(_ key: Key) async {
        if waiters[key] == nil {
            waiters[key] = []
            return
        }
        await withCheckedContinuation { waiters[key, default: []].append($0) }
    }

    /// Hands the lock straight to the next waiter, so no third caller can slip in between.
    public func release(_ key: Key) {
        guard var queue = waiters[key] else { return }
        if queue.isEmpty {
            waiters[key] = nil
        } else {
            let next = queue.removeFirst()
            waiters[key] = queue
            next.resume()
        }
    }

    public func withLock<T: Sendable>(_ key: Key, _ body: @Sendable () async throws -> T) async throws -> T {
        await acquire(key)
        do {
            let result = try await body()
            release(key)
            return result
        } catch {
            release(key)
            throw error
        }
    }

    /// Whether anybody holds the key (tests).
    public func isHeld(_ key: Key) -> Bool { waiters[key] != nil }

    /// Callers waiting for `key` while someone holds it.
    public func queued(_ key: Key) -> Int { waiters[key]?.count ?? 0 }
}
