import FileIO
import OCI
import Registry

/// A big compressed blob fetched with several concurrent `Range` requests into memory, for a
/// pull that only decompresses it. Chunks are held until both in-order readers, the hasher
/// and the decompressor, have passed them, and the streams never run more than two chunks
/// each ahead of the slower reader: memory stays bounded and no byte touches the disk (a
/// temporary file would cost a write and two reads of the whole blob).
///
/// Fetch tasks wait for room in the window by suspending on the monitor, so they never hold
/// the cooperative threads that the other streams' bodies need; the readers block on it.
public final class RangedStream: HashedDownload, Sendable {
    public let descriptor: Descriptor
    let chunkSize: Int64
    let chunkCount: Int

    struct Window {
        var chunks: [UnsafeMutableRawBufferPointer?]
        var present: [Bool]
        var nextToClaim = 0
        /// Chunks each reader has finished with: [hasher, decompressor].
        var passed = [0, 0]
        /// Chunks `[0, released)` are done with; their buffers went back to `spare`.
        var released = 0
        /// Buffers of `chunkSize` bytes to reuse: a fresh buffer costs a page fault and a
        /// zeroed page for every 4 KiB, as much as the page-cache writes this type avoids.
        var spare: [UnsafeMutableRawBufferPointer] = []
        var failure: String?

        var passedByBoth: Int { min(passed[0], passed[1]) }

        /// Frees the chunks both readers have passed.
        mutating func releasePassed() {
            while released < min(passedByBoth, chunks.count) {
                if let buffer = chunks[released] { spare.append(buffer) }
                chunks[released] = nil
                released += 1
            }
        }
    }

    private let window: Monitor<Window>

    public init(descriptor: Descriptor, chunkSize: Int64 = 16 << 20) {
        self.descriptor = descriptor
        self.chunkSize = chunkSize
        chunkCount = Int((descriptor.size + chunkSize - 1) / chunkSize)
        window = Monitor(Window(chunks: Array(repeating: nil, count: chunkCount), present: Array(repeating: false, count: chunkCount)))
    }

    deinit {
        window.update { window in
            window.chunks.forEach { $0?.deallocate() }
            window.spare.forEach { $0.deallocate() }
        }
    }

    enum Reader: Int { case hasher = 0, decompressor = 1 }

    /// Fetches every chunk with `streams` concurrent requests while the hasher follows; throws
    /// on a download error or a digest mismatch (naming both digests).
    public func fetchAll(client: any RangeSource, endpoints: [Endpoint], reference: Reference, streams: Int,
                         onBytes: (@Sendable (Int64) -> Void)?) async throws {
        let hashing = BlockingThreads.task { [self] in hashInOrder() }
        do {
            try await withThrowingTaskGroup(of: Void.self) { group in
                let ahead = 2 * max(1, streams)
                for _ in 0..<max(1, streams) {
                    group.addTask { [self] in
                        do {
                            while let chunk = await claim(ahead: ahead) {
                                try await fetch(chunk, client: client, endpoints: endpoints, reference: reference)
                                onBytes?(Int64(range(of: chunk).count))
                            }
                        } catch {
                            // Ends the other streams' waits for room, and the readers'.
                            fail("downloading \(descriptor.digest) failed: \(error)")
                            throw error
                        }
                    }
                }
                try await group.waitForAll()
            }
        } catch {
            fail("downloading \(descriptor.digest) failed: \(error)")
            _ = try? await hashing.value
            throw error
        }
        try await checkDigest(hashing, reference: reference)
    }

    public var failureMessage: String? { window.read(\.failure) }

    public func fail(_ message: String) {
        window.update { window in
            if window.failure == nil { window.failure = message }
        }
    }

    func range(of chunk: Int) -> Range<Int64> {
        Int64(chunk) * chunkSize..<min(Int64(chunk + 1) * chunkSize, descriptor.size)
    }

    /// The next chunk to fetch once there is room for it; nil when all are claimed, the
    /// stream failed, or the task was cancelled.
    private func claim(ahead: Int) async -> Int? {
        enum Claim: Sendable { case chunk(Int), done }
        let count = chunkCount
        let claim = await window.next { window -> Claim? in
            if window.failure != nil || window.nextToClaim >= count { return .done }
            guard window.nextToClaim < window.passedByBoth + ahead else { return nil }
            window.nextToClaim += 1
            return .chunk(window.nextToClaim - 1)
        }
        guard case .chunk(let chunk) = claim else { return nil }
        return chunk
    }

    private func fetch(_ chunk: Int, client: any RangeSource, endpoints: [Endpoint], reference: Reference) async throws {
        let bounds = range(of: chunk)
        let size = Int(chunkSize)
        let buffer = window.update(wake: .none) { window in
            let buffer = window.spare.popLast() ?? .allocate(byteCount: size, alignment: 4096)
            window.chunks[chunk] = buffer
            return buffer
        }
        try await client.readRange(descriptor, bounds, from: endpoints, reference: reference) { bytes, offset in
            let start = Int(offset - bounds.lowerBound)
            UnsafeMutableRawBufferPointer(rebasing: buffer[start..<start + bytes.count]).copyMemory(from: bytes)
        }
        window.update { $0.present[chunk] = true }
    }

    /// Waits for chunk `index`; nil once the stream has failed.
    private func waitFor(_ index: Int) -> UnsafeRawBufferPointer? {
        let length = range(of: index).count
        let buffer: UnsafeMutableRawBufferPointer?? = window.wait(wake: .none) { window in
            if window.failure != nil { return .some(nil) }
            return window.present[index] ? .some(window.chunks[index]) : nil
        }
        guard let held = buffer, let held else { return nil }
        return UnsafeRawBufferPointer(rebasing: held[0..<length])
    }

    /// `reader` is done with chunk `index`: free it once the other reader is too.
    private func pass(_ index: Int, by reader: Reader) {
        window.update { window in
            window.passed[reader.rawValue] = max(window.passed[reader.rawValue], index + 1)
            window.releasePassed()
        }
    }

    private func hashInOrder() -> Digest? {
        var hasher = DigestHasher()
        for index in 0..<chunkCount {
            guard let bytes = waitFor(index) else { return nil }
            hasher.update(bytes)
            pass(index, by: .hasher)
        }
        return chunkCount == 0 ? Digest.of([]) : hasher.finalize()
    }

    /// Chunk `index` for the decompressor, waiting for it; nil once the stream has failed.
    func bytes(of index: Int) -> UnsafeRawBufferPointer? { waitFor(index) }

    func done(with index: Int) { pass(index, by: .decompressor) }

    /// The decompressor stopped reading (it finished, or failed on a malformed stream): it
    /// no longer holds the window back, so the download and the digest check still complete.
    public func decompressorFinished() {
        let count = chunkCount
        window.update { window in
            window.passed[Reader.decompressor.rawValue] = count
            window.releasePassed()
        }
    }
}

/// Reads a `RangedStream` front to back for the decompressor, lending it the chunks in place.
public final class RangedStreamReader: ByteSourceAdapter {
    private let stream: RangedStream
    private var chunk = 0
    private var offsetInChunk = 0
    /// A chunk lent whole by `borrow`: the decompressor may still read it until its next call.
    private var lent: Int?

    public init(_ stream: RangedStream) { self.stream = stream }

    override public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        let bytes = try next(upTo: buffer.count)
        buffer.copyMemory(from: bytes)
        return bytes.count
    }

    override public func borrow(upTo count: Int) throws -> UnsafeRawBufferPointer? { try next(upTo: count) }

    /// The next bytes of the current chunk, in place; empty at the end.
    private func next(upTo count: Int) throws -> UnsafeRawBufferPointer {
        if let lent {
            stream.done(with: lent)
            self.lent = nil
        }
        guard count > 0, chunk < stream.chunkCount else { return UnsafeRawBufferPointer(start: nil, count: 0) }
        guard let bytes = stream.bytes(of: chunk) else {
            throw RegistryError(.network, stream.failureMessage ?? "blob \(stream.descriptor.digest) could not be fetched")
        }
        let n = min(count, bytes.count - offsetInChunk)
        let part = UnsafeRawBufferPointer(rebasing: bytes[offsetInChunk..<offsetInChunk + n])
        offsetInChunk += n
        if offsetInChunk == bytes.count {
            lent = chunk
            chunk += 1
            offsetInChunk = 0
        }
        return part
    }
}
