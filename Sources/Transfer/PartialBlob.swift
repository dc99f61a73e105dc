import FileIO
import Integrity
import OCI
import Registry
#if canImport(Glibc)
import Glibc
#endif

/// A blob being downloaded into `tmp/<hex>.partial`. It survives the process, so a later pull
/// resumes where this one stopped; and it can be read while it grows, so decompression runs
/// alongside the download instead of after it.
///
/// Unchecked: the downloading task alone touches `hasher`, `summer`, `pending`, `pendingCount`,
/// `received` and `directHandle` (count, append, flush, restart, end); what followers read
/// is in `shared`, behind its monitor.
public final class PartialBlob: BlobSink, @unchecked Sendable {
    public struct Restarted: Error {}

    public let path: String
    public let handle: OpenFile
    private var hasher = DigestHasher()
    /// The chunk sums the store keeps with the blob, from the same bytes as the digest.
    private var summer = ChunkSummer()
    private let onProgress: @Sendable (Int64) -> Void
    /// Bytes received but not yet written: network chunks are small (tens of KiB), and one
    /// write and one wake-up of the decompressor per chunk would cost more than the copy.
    private var pending: UnsafeMutableRawBufferPointer
    private var pendingCount = 0
    private var directHandle: OpenFile?
    /// Bytes held in all: on disk plus pending (where a resumed download starts).
    private var received: Int64 = 0
    private let retaining: Bool

    struct Shared {
        /// Bytes in the file.
        var length: Int64 = 0
        /// Bumped by `restart`: a follower of an earlier generation must start over.
        var generation = 0
        var ended = false
        var failure: (any Error)?
        /// Blocks already written, kept for the follower when `retaining`, oldest first. The
        /// file is for a later pull to resume from; the decompressor reads these instead, so
        /// a blob written with O_DIRECT is not read back from disk.
        var retained: [(start: Int64, block: UnsafeMutableRawBufferPointer, count: Int)] = []
        var spare: [UnsafeMutableRawBufferPointer] = []

        /// Lets go of the retained blocks that end at or before `offset`.
        mutating func release(before offset: Int64) {
            while let first = retained.first, first.start + Int64(first.count) <= offset {
                spare.append(retained.removeFirst().block)
            }
        }
    }

    private let shared: Monitor<Shared>
    /// Blocks kept at most: a follower further behind reads the file.
    static let retainedLimit = 16
    static let blockSize = 4 << 20

    /// `direct`: write with O_DIRECT, skipping the copy into the page cache (most of a big
    /// pull's CPU time otherwise). `retaining`: a `FollowingReader` will read the blob as it
    /// grows (a compressed layer being decompressed); the last blocks written stay in memory
    /// for it.
    public init(path: String, direct: Bool, retaining: Bool = false, onProgress: @escaping @Sendable (Int64) -> Void) throws {
        self.path = path
        self.onProgress = onProgress
        self.retaining = retaining
        handle = try OpenFile(path: path, flags: O_RDWR | O_CREAT, mode: 0o600)
        // File systems without O_DIRECT (tmpfs) refuse it; the buffered descriptor is used instead.
        directHandle = direct ? handle.reopenForDirectWrites() : nil
        pending = .allocate(byteCount: Self.blockSize, alignment: 4096)
        let length = try Self.rehash(handle, into: &hasher, &summer)
        shared = Monitor(Shared(length: length))
        received = length
        if length > 0 { onProgress(length) }
    }

    deinit {
        pending.deallocate()
        shared.update { shared in
            for block in shared.retained { block.block.deallocate() }
            for block in shared.spare { block.deallocate() }
        }
    }

    /// Hashes what an earlier, interrupted pull left behind; returns its length.
    private static func rehash(_ handle: OpenFile, into hasher: inout DigestHasher, _ summer: inout ChunkSummer) throws -> Int64 {
        let size = try handle.size()
        guard size > 0 else { return 0 }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 4 << 20, alignment: 64)
        defer { buffer.deallocate() }
        var offset: Int64 = 0
        while offset < size {
            let n = try handle.read(into: buffer, at: offset)
            if n == 0 { break }
            hasher.update(UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
            summer.update(UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
            offset += Int64(n)
        }
        return offset
    }

    public var count: Int64 { received }

    public func append(_ bytes: UnsafeRawBufferPointer) throws {
        hasher.update(bytes)
        summer.update(bytes)
        var rest = bytes
        while !rest.isEmpty {
            if pending.fill(&pendingCount, from: &rest) { try flush() }
        }
        received += Int64(bytes.count)
    }

    /// Writes what is pending and lets readers see it.
    public func flush() throws {
        guard pendingCount > 0 else { return }
        let start = shared.read(\.length)
        let bytes = UnsafeRawBufferPointer(rebasing: pending[0..<pendingCount])
        // O_DIRECT needs block-aligned offsets and sizes: only the last, short batch is not.
        let direct = start % 4096 == 0 && pendingCount % 4096 == 0 ? directHandle : nil
        if let direct, let refused = Self.write(bytes, at: start, to: direct) {
            // Opened with O_DIRECT but the file system refuses such writes: go buffered.
            guard refused.errno == EINVAL else { throw refused }
            directHandle = nil
            try handle.writeAll(bytes, at: start)
        } else if direct == nil {
            try handle.writeAll(bytes, at: start)
        }
        let written = Int64(pendingCount)
        let (retaining, size) = (self.retaining, Self.blockSize)
        let filled = pending
        let next: UnsafeMutableRawBufferPointer? = shared.update { shared in
            shared.length += written
            guard retaining else { return nil }
            shared.retained.append((start, filled, Int(written)))
            while shared.retained.count > Self.retainedLimit { shared.spare.append(shared.retained.removeFirst().block) }
            return shared.spare.popLast() ?? .allocate(byteCount: size, alignment: 4096)
        }
        if let next { pending = next }
        pendingCount = 0
        let now = start + written
        if directHandle == nil, now / (64 << 20) != start / (64 << 20) { handle.startWriteback(from: 0, length: 0) }
        onProgress(now)
    }

    /// nil once every byte is written.
    private static func write(_ bytes: UnsafeRawBufferPointer, at offset: Int64, to file: OpenFile) -> SystemError? {
        do {
            try file.writeAll(bytes, at: offset)
            return nil
        } catch {
            return error
        }
    }

    public func restart() throws {
        pendingCount = 0
        try handle.truncate(to: 0)
        hasher = DigestHasher()
        summer = ChunkSummer()
        received = 0
        shared.update { shared in
            shared.spare += shared.retained.map(\.block)
            shared.retained = []
            shared.length = 0
            shared.generation += 1
        }
        onProgress(0)
    }

    public func digest() -> Digest { hasher.finalize() }

    /// The chunk sums of every byte appended (and resumed from).
    public func sums() -> ChunkSums { summer.finish() }

    /// Writes what is pending and wakes readers: no more bytes will come (or they never will,
    /// if `error`).
    public func end(error: (any Error)? = nil) throws {
        if error == nil { try flush() }
        shared.update { shared in
            shared.ended = true
            shared.failure = error
        }
    }

    /// Blocks until bytes beyond `offset` exist; returns how many are readable (0 at the end).
    func waitForBytes(after offset: Int64, generation seen: Int) throws -> Int64 {
        enum Found { case bytes(Int64), restarted, failed(any Error) }
        let found: Found = shared.wait(wake: .none) { shared in
            if shared.generation != seen { return .restarted }
            if let failure = shared.failure { return .failed(failure) }
            if shared.length > offset { return .bytes(shared.length - offset) }
            return shared.ended ? .bytes(0) : nil
        }
        switch found {
        case .bytes(let count): return count
        case .restarted: throw Restarted()
        case .failed(let error): throw error
        }
    }

    /// Reads for the follower: from a retained block when it holds `offset` (blocks before
    /// it are let go), else from the file.
    func readFollowing(into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) throws -> Int {
        let copied: Int? = shared.update(wake: .none) { shared in
            shared.release(before: offset)
            guard let held = shared.retained.first, held.start <= offset else { return nil }
            let from = Int(offset - held.start)
            let n = min(buffer.count, held.count - from)
            UnsafeMutableRawBufferPointer(rebasing: buffer[0..<n])
                .copyMemory(from: UnsafeRawBufferPointer(rebasing: held.block[from..<from + n]))
            return n
        }
        if let copied { return copied }
        return try handle.read(into: buffer, at: offset)
    }

    var currentGeneration: Int { shared.read(\.generation) }
}

/// Reads a `PartialBlob` from the start, following it as it grows.
public final class FollowingReader: ByteSourceAdapter {
    private let blob: PartialBlob
    private let generation: Int
    private var offset: Int64 = 0

    public init(_ blob: PartialBlob) {
        self.blob = blob
        self.generation = blob.currentGeneration
    }

    override public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        let available = try blob.waitForBytes(after: offset, generation: generation)
        guard available > 0 else { return 0 }
        let want = Int(min(Int64(buffer.count), available))
        let n = try blob.readFollowing(into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<want]), at: offset)
        offset += Int64(n)
        return n
    }
}
