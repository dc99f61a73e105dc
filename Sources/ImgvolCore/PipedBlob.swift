import Foundation
import OCI
import Registry

/// A blob handed from the download to a reader through a bounded queue in memory, with no
/// file: for a big uncompressed layer on one plain stream, whose split copy is the only one
/// written (a partial file next to it was a second copy: 4.8 s for a 1 GiB layer instead of
/// 2.2 s). Not resumable across processes, like a download over several `Range` streams;
/// within one, a dropped connection resumes with `Range` from what was received.
///
/// The reader hashes what it takes, so SHA-256 runs on its thread, not the network's (on
/// the network thread, one stream took 2.8-3.3 s); once the reader is gone, `append` hashes.
final class PipedBlob: BlobSink, @unchecked Sendable {
    private let condition = NSCondition()
    private var queue: [[UInt8]] = []
    private var queued = 0
    private let limit: Int
    private var ended = false
    private var failure: (any Error)?
    private var readerGone = false
    /// Touched by the reader until it is gone, then under the lock.
    private var hasher = DigestHasher()
    private var received: Int64 = 0
    private var hashed: Int64 = 0
    private let digestName: String
    private let onProgress: @Sendable (Int64) -> Void

    init(digest: Digest, limit: Int = 32 << 20, onProgress: @escaping @Sendable (Int64) -> Void) {
        self.digestName = digest.description
        self.limit = limit
        self.onProgress = onProgress
    }

    /// Only the downloading task calls count, append and restart.
    var count: Int64 { received }

    func append(_ bytes: UnsafeRawBufferPointer) throws {
        onProgress(received + Int64(bytes.count))
        condition.lock()
        defer { condition.unlock() }
        received += Int64(bytes.count)
        while queued >= limit, !readerGone { condition.wait() }
        guard !readerGone else {
            // Hashed even after the reader stopped: the digest tells a corrupt blob from a
            // malformed one.
            hasher.update(bytes)
            hashed += Int64(bytes.count)
            return
        }
        queue.append(Array(bytes))
        queued += bytes.count
        condition.broadcast()
    }

    /// The reader has consumed what came: a server that ignores `Range` cannot be followed.
    func restart() throws {
        guard received > 0 else { return }
        throw RegistryError(.rangeUnsupported, "the registry ignored a Range request while resuming blob \(digestName)")
    }

    /// Waits for the reader to have hashed every byte received.
    func digest() -> Digest {
        condition.lock()
        defer { condition.unlock() }
        while hashed < received { condition.wait() }
        return hasher.finalize()
    }

    /// No more bytes will come (or they never will, if `error`).
    func end(error: (any Error)? = nil) {
        condition.lock()
        ended = true
        failure = error
        condition.broadcast()
        condition.unlock()
    }

    /// The reader stopped (it finished or failed): the download no longer waits for it.
    func readerFinished() {
        condition.lock()
        readerGone = true
        for chunk in queue {
            chunk.withUnsafeBytes { hasher.update($0) }
            hashed += Int64(chunk.count)
        }
        queue = []
        queued = 0
        condition.broadcast()
        condition.unlock()
    }

    /// The next chunk, hashed, waiting for it; nil at the end. Only the reader calls it.
    fileprivate func next() throws -> [UInt8]? {
        condition.lock()
        while queue.isEmpty, !ended { condition.wait() }
        if queue.isEmpty {
            let failure = self.failure
            condition.unlock()
            if let failure { throw failure }
            return nil
        }
        let chunk = queue.removeFirst()
        queued -= chunk.count
        condition.broadcast()
        condition.unlock()
        chunk.withUnsafeBytes { hasher.update($0) }
        condition.lock()
        hashed += Int64(chunk.count)
        condition.broadcast()
        condition.unlock()
        return chunk
    }
}

/// Reads a `PipedBlob` from the start as it arrives.
final class PipedReader: ByteSourceAdapter {
    private let blob: PipedBlob
    private var chunk: [UInt8] = []
    private var offset = 0

    init(_ blob: PipedBlob) { self.blob = blob }

    override func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        if offset == chunk.count {
            guard let next = try blob.next() else { return 0 }
            chunk = next
            offset = 0
        }
        let n = min(buffer.count, chunk.count - offset)
        chunk.withUnsafeBytes { source in
            buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: source[offset..<offset + n]))
        }
        offset += n
        return n
    }
}
