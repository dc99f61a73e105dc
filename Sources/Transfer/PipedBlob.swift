import FileIO
import OCI
import Registry

/// A blob handed from the download to a reader through a bounded queue in memory, with no
/// file: for a big uncompressed layer on one plain stream, whose split copy is the only one
/// written (a partial file beside it would be a second copy). Not resumable across
/// processes, like a download over several `Range` streams; within one, a dropped connection
/// resumes with `Range` from what was received.
///
/// The reader hashes what it takes, so SHA-256 runs on its thread, not the network's; once
/// the reader is gone, `append` hashes.
public final class PipedBlob: BlobSink, Sendable {
    struct Queue {
        var chunks: [[UInt8]] = []
        var queued = 0
        var ended = false
        var failure: (any Error)?
        var readerGone = false
        /// What `readerHasher` hashed, and then what came after the reader was gone.
        var hasher = DigestHasher()
        var received: Int64 = 0
        var hashed: Int64 = 0
    }

    private let queue = Monitor(Queue())
    private let limit: Int
    private let digestName: String
    private let onProgress: @Sendable (Int64) -> Void
    /// The reader's own hasher, handed to the queue when it is done.
    private let readerHasher = Monitor(DigestHasher())

    public init(digest: Digest, limit: Int = 32 << 20, onProgress: @escaping @Sendable (Int64) -> Void) {
        self.digestName = digest.description
        self.limit = limit
        self.onProgress = onProgress
    }

    public var count: Int64 { queue.read(\.received) }

    public func append(_ bytes: UnsafeRawBufferPointer) throws {
        let limit = self.limit
        let received = queue.update { queue in
            queue.received += Int64(bytes.count)
            return queue.received
        }
        onProgress(received)
        queue.wait { queue -> Void? in
            guard queue.readerGone || queue.queued < limit else { return nil }
            if queue.readerGone {
                // Hashed even after the reader stopped: the digest tells a corrupt blob from
                // a malformed one.
                queue.hasher.update(bytes)
                queue.hashed += Int64(bytes.count)
            } else {
                queue.chunks.append(Array(bytes))
                queue.queued += bytes.count
            }
            return ()
        }
    }

    /// The reader has consumed what came: a server that ignores `Range` cannot be followed.
    public func restart() throws {
        guard count > 0 else { return }
        throw RegistryError(.rangeUnsupported, "the registry ignored a Range request while resuming blob \(digestName)")
    }

    /// Waits for every byte received to be hashed (by the reader, or here once it is gone).
    public func digest() -> Digest {
        let readerGone = queue.wait(wake: .none) { queue in queue.hashed == queue.received ? queue.readerGone : nil }
        return readerGone ? queue.read { $0.hasher.finalize() } : readerHasher.read { $0.finalize() }
    }

    /// No more bytes will come (or they never will, if `error`).
    public func end(error: (any Error)? = nil) {
        queue.update { queue in
            queue.ended = true
            queue.failure = error
        }
    }

    /// The reader stopped (it finished or failed): the download no longer waits for it, and
    /// what it hashed and what is still queued go into the digest.
    public func readerFinished() {
        let hashedByReader = readerHasher.read { $0 }
        queue.update { queue in
            guard !queue.readerGone else { return }
            queue.readerGone = true
            queue.hasher = hashedByReader
            for chunk in queue.chunks {
                chunk.withUnsafeBytes { queue.hasher.update($0) }
                queue.hashed += Int64(chunk.count)
            }
            queue.chunks = []
            queue.queued = 0
        }
    }

    /// The next chunk, hashed, waiting for it; nil at the end. Only the reader calls it.
    fileprivate func next() throws -> [UInt8]? {
        enum Taken { case chunk([UInt8]), end, failed(any Error) }
        let taken: Taken = queue.wait { queue in
            if !queue.chunks.isEmpty {
                let chunk = queue.chunks.removeFirst()
                queue.queued -= chunk.count
                return .chunk(chunk)
            }
            guard queue.ended else { return nil }
            return queue.failure.map { .failed($0) } ?? .end
        }
        switch taken {
        case .chunk(let chunk):
            readerHasher.update { hasher in chunk.withUnsafeBytes { hasher.update($0) } }
            queue.update { $0.hashed += Int64(chunk.count) }
            return chunk
        case .end: return nil
        case .failed(let error): throw error
        }
    }
}

/// Reads a `PipedBlob` from the start as it arrives.
public final class PipedReader: ByteSourceAdapter {
    private let blob: PipedBlob
    private var chunk: [UInt8] = []
    private var offset = 0

    public init(_ blob: PipedBlob) { self.blob = blob }

    override public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
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
