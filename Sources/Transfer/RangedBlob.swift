import FileIO
import Integrity
import OCI
import Registry
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A blob assembled in a sparse file from concurrent HTTP `Range` requests, chunk by chunk.
///
/// Two users: a pull of one big blob (several streams beat one on a long fat pipe) and a lazy
/// mount (a reader needs bytes from the middle now). Readers block in `waitFor` until their
/// chunks are on disk and push those chunks to the front of the queue; the rest arrive in
/// order. A hasher follows the contiguous prefix, so the digest is known as soon as the last
/// chunk lands and only then is the blob `verified`. A mismatch fails every waiting and later
/// reader: bytes served before that point were unverified (the documented lazy trade-off).
public final class RangedBlob: Sendable {
    public let descriptor: Descriptor
    public let path: String
    public let file: OpenFile
    let chunkSize: Int64
    let chunkCount: Int
    /// Chunks fetched beyond what a reader asked for.
    let readAhead: Int
    /// Chunks the in-order download asks for in one request: small chunks let a reader's
    /// request jump the queue quickly, long requests keep per-request costs (a redirect to
    /// object storage, each) low. Readers are woken chunk by chunk as the bytes land.
    let chunksPerRequest: Int
    /// Rung when a reader queues an urgent chunk, so idle fetch workers look again.
    let signal: RangedFetch.Signal?

    struct Chunks {
        var present: [Bool]
        var inFlight: [Bool]
        var urgent: [Int] = []
        var nextSequential = 0
        var failure: String?

        func missing(_ chunk: Int) -> Bool { !present[chunk] && !inFlight[chunk] }
    }

    private let chunks: Monitor<Chunks>
    /// Read without the lock: after verification every FUSE read passes here.
    private let verified = Atomic<Bool>(false)
    /// The chunk sums the store keeps with the blob, made by the hasher from the same bytes.
    private let summed = Mutex<ChunkSums?>(nil)

    /// Known once the hasher has read every byte.
    public var sums: ChunkSums? { summed.withLock { $0 } }

    public init(descriptor: Descriptor, path: String, chunkSize: Int64 = 4 << 20, readAhead: Int = 2,
                chunksPerRequest: Int = 1, signal: RangedFetch.Signal? = nil) throws {
        self.descriptor = descriptor
        self.path = path
        self.chunkSize = chunkSize
        self.readAhead = readAhead
        self.chunksPerRequest = max(1, chunksPerRequest)
        self.signal = signal
        chunkCount = Int((descriptor.size + chunkSize - 1) / chunkSize)
        chunks = Monitor(Chunks(present: Array(repeating: false, count: chunkCount), inFlight: Array(repeating: false, count: chunkCount)))
        file = try OpenFile(path: path, flags: O_RDWR | O_CREAT | O_TRUNC, mode: 0o600)
        try file.truncate(to: descriptor.size)
    }

    public var failureMessage: String? { chunks.read(\.failure) }

    /// Blocks until bytes `[offset, offset + length)` are on disk, asking for them (and a few
    /// chunks after them) first. False once the blob has failed.
    public func waitFor(offset: Int64, length: Int) -> Bool {
        waitFor(offset: offset, length: length, readAhead: readAhead)
    }

    /// `readAhead` 0 for readers that jump around (tar headers), so that nothing they will
    /// not read is fetched ahead of what they will.
    func waitFor(offset: Int64, length: Int, readAhead: Int) -> Bool {
        guard length > 0, offset < descriptor.size, !verified.load(ordering: .acquiring) else { return true }
        let first = Int(offset / chunkSize)
        let last = Int(min(offset + Int64(length), descriptor.size) - 1) / Int(chunkSize)
        let wanted = first...min(chunkCount - 1, last + readAhead)
        let asked = chunks.update { chunks in
            let missing = wanted.filter { chunks.missing($0) && !chunks.urgent.contains($0) }
            chunks.urgent += missing
            return !missing.isEmpty
        }
        if asked { signal?.ring() }
        return chunks.wait(wake: .none) { chunks in
            if chunks.failure != nil { return false }
            return (first...last).allSatisfy({ chunks.present[$0] }) ? true : nil
        }
    }

    /// Marks the blob failed: every reader gets an error from now on.
    public func fail(_ message: String) {
        chunks.update { chunks in
            if chunks.failure == nil { chunks.failure = message }
        }
    }

    /// Fetches every chunk with `streams` concurrent requests and checks the digest.
    public func fetchAll(client: any RangeSource, endpoints: [Endpoint], reference: Reference, streams: Int,
                         onBytes: (@Sendable (Int64) -> Void)? = nil) async throws {
        let hashing = startHashing()
        try await RangedFetch(blobs: [self], client: client, endpoints: endpoints, reference: reference, onBytes: onBytes)
            .run(streams: streams)
        try await verify(hashing, reference: reference)
    }

    /// The hasher following the contiguous prefix; nil when the blob failed first.
    public func startHashing() -> Task<Digest?, any Error> {
        BlockingThreads.task { [self] in hashInOrder() }
    }

    /// Waits for the hash and compares it: a mismatch fails the blob for every reader.
    public func verify(_ hashing: Task<Digest?, any Error>, reference: Reference) async throws {
        try await checkDigest(hashing, reference: reference)
        verified.store(true, ordering: .releasing)
    }

    /// The next chunk a reader is waiting for, if any.
    func claimUrgent() -> Range<Int>? {
        chunks.update { chunks in
            guard chunks.failure == nil else { return nil }
            while let chunk = chunks.urgent.first {
                chunks.urgent.removeFirst()
                if chunks.missing(chunk) {
                    chunks.inFlight[chunk] = true
                    return chunk..<chunk + 1
                }
            }
            return nil
        }
    }

    /// The next run of chunks in order that nobody has fetched or is fetching.
    func claimNext() -> Range<Int>? {
        let count = chunkCount
        let perRequest = chunksPerRequest
        return chunks.update { chunks in
            guard chunks.failure == nil else { return nil }
            while chunks.nextSequential < count, !chunks.missing(chunks.nextSequential) { chunks.nextSequential += 1 }
            guard chunks.nextSequential < count else { return nil }
            let start = chunks.nextSequential
            while chunks.nextSequential < count, chunks.nextSequential - start < perRequest, chunks.missing(chunks.nextSequential) {
                chunks.inFlight[chunks.nextSequential] = true
                chunks.nextSequential += 1
            }
            return start..<chunks.nextSequential
        }
    }

    func range(of chunks: Range<Int>) -> Range<Int64> {
        Int64(chunks.lowerBound) * chunkSize..<min(Int64(chunks.upperBound) * chunkSize, descriptor.size)
    }

    /// One request for `chunks`; each chunk is marked present as soon as its last byte is
    /// written, so a reader waiting for the first chunk of a long request is not held up.
    func fetch(_ wanted: Range<Int>, client: any RangeSource, endpoints: [Endpoint], reference: Reference) async throws {
        var next = wanted.lowerBound
        do {
            try await client.readRange(descriptor, range(of: wanted), from: endpoints, reference: reference) { bytes, offset in
                try file.writeAll(bytes, at: offset)
                let end = offset + Int64(bytes.count)
                while next < wanted.upperBound, range(of: next..<next + 1).upperBound <= end {
                    finish(next)
                    next += 1
                }
            }
        } catch {
            fail("downloading \(descriptor.digest) failed: \(error)")
            throw error
        }
        while next < wanted.upperBound {
            finish(next)
            next += 1
        }
    }

    private func finish(_ chunk: Int) {
        chunks.update { chunks in
            chunks.present[chunk] = true
            chunks.inFlight[chunk] = false
        }
    }

    /// Hashes chunk after chunk as each arrives (from the page cache: it was just written).
    /// nil when the blob failed first.
    private func hashInOrder() -> Digest? {
        var hasher = DigestHasher()
        var summer = ChunkSummer()
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: Int(chunkSize), alignment: 64)
        defer { buffer.deallocate() }
        for chunk in 0..<chunkCount {
            let arrived = chunks.wait(wake: .none) { chunks in chunks.failure != nil ? false : (chunks.present[chunk] ? true : nil) }
            guard arrived else { return nil }
            let start = Int64(chunk) * chunkSize
            let length = Int(min(chunkSize, descriptor.size - start))
            let n: Int
            do { n = try file.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<length]), at: start) } catch {
                fail("cannot read back \(path) to verify it: \(error)")
                return nil
            }
            guard n == length else {
                fail("cannot read back \(path) to verify it: it ends at byte \(start + Int64(n))")
                return nil
            }
            hasher.update(UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
            summer.update(UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
        }
        summed.withLock { $0 = summer.finish() }
        if chunkCount == 0 { return Digest.of([]) }
        return hasher.finalize()
    }
}

extension RangedBlob: HashedDownload {}

extension RangedBlob: PositionalSource {
    /// Reads what has arrived, waiting for (and asking first for) the chunks it needs.
    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) throws -> Int {
        let length = Int(min(Int64(buffer.count), max(0, descriptor.size - offset)))
        guard length > 0 else { return 0 }
        guard waitFor(offset: offset, length: length, readAhead: 0) else {
            throw RegistryError(.network, failureMessage ?? "blob \(descriptor.digest) could not be fetched")
        }
        return try file.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<length]), at: offset)
    }
}
