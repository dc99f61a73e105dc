import FileIO
import Foundation
import OCI
import Registry
#if canImport(Glibc)
import Glibc
#endif

/// A blob being downloaded into `tmp/<hex>.partial`. It survives the process, so a later pull
/// resumes where this one stopped; and it can be read while it grows, so decompression runs
/// alongside the download instead of after it.
final class PartialBlob: BlobSink, @unchecked Sendable {
    struct Restarted: Error {}

    let path: String
    let handle: OpenFile
    private let condition = NSCondition()
    private var hasher = DigestHasher()
    private var length: Int64 = 0
    private var generation = 0
    private var ended = false
    private var failure: (any Error)?
    private let onProgress: @Sendable (Int64) -> Void
    /// Bytes received but not yet written: network chunks are small (tens of KiB), and one
    /// write and one wake-up of the decompressor per chunk would cost more than the copy.
    private var pending: UnsafeMutableRawBufferPointer
    private var pendingCount = 0
    private var directHandle: OpenFile?
    /// Bytes held in all: on disk plus pending (where a resumed download starts).
    private var received: Int64 = 0

    /// Blocks already written, kept for the follower when `retaining`, oldest first. The file is
    /// for a later pull to resume from; the decompressor reads these instead, so a blob
    /// written with O_DIRECT is not read back from disk.
    private var retained: [(start: Int64, block: UnsafeMutableRawBufferPointer, count: Int)] = []
    private var spare: [UnsafeMutableRawBufferPointer] = []
    private let retaining: Bool
    /// Blocks kept at most: a follower further behind reads the file.
    static let retainedLimit = 16
    static let blockSize = 4 << 20

    /// `direct`: write with O_DIRECT. It skips the copy into the page cache, which is most of
    /// a 1 GiB pull's CPU on these machines (3.7 s → 2.6 s measured), and getting fresh
    /// page-cache pages costs these VMs 0.25-2.6 s per GiB from one run to the next.
    /// `retaining`: a `FollowingReader` will read the blob as it grows (a compressed layer
    /// being decompressed); the last blocks written stay in memory for it.
    init(path: String, direct: Bool, retaining: Bool = false, onProgress: @escaping @Sendable (Int64) -> Void) throws {
        self.path = path
        self.onProgress = onProgress
        self.retaining = retaining
        handle = try OpenFile(path: path, flags: O_RDWR | O_CREAT, mode: 0o600)
        // File systems without O_DIRECT (tmpfs) refuse it; the buffered descriptor is used instead.
        directHandle = direct ? handle.reopenForDirectWrites() : nil
        pending = .allocate(byteCount: Self.blockSize, alignment: 4096)
        try resumeFromExisting()
        received = length
    }

    deinit {
        pending.deallocate()
        for block in retained { block.block.deallocate() }
        for block in spare { block.deallocate() }
    }

    /// Re-hashes what an earlier, interrupted pull left behind.
    private func resumeFromExisting() throws {
        let size = try handle.size()
        guard size > 0 else { return }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 4 << 20, alignment: 64)
        defer { buffer.deallocate() }
        var offset: Int64 = 0
        while offset < size {
            let n = try handle.read(into: buffer, at: offset)
            if n == 0 { break }
            hasher.update(UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
            offset += Int64(n)
        }
        length = offset
        onProgress(length)
    }

    /// Only the downloading task calls count, append and restart.
    var count: Int64 { received }

    func append(_ bytes: UnsafeRawBufferPointer) throws {
        hasher.update(bytes)
        var rest = bytes
        while !rest.isEmpty {
            if pending.fill(&pendingCount, from: &rest) { try flush() }
        }
        received += Int64(bytes.count)
    }

    /// Writes what is pending and lets readers see it.
    func flush() throws {
        guard pendingCount > 0, let base = pending.baseAddress else { return }
        var written = 0
        let start = length
        // O_DIRECT needs block-aligned offsets and sizes: only the last, short batch is not.
        let aligned = start % 4096 == 0 && pendingCount % 4096 == 0
        var fd = aligned ? (directHandle?.fd ?? handle.fd) : handle.fd
        while written < pendingCount {
            let n = pwrite(fd, base + written, pendingCount - written, off_t(start) + off_t(written))
            if n >= 0 { written += n; continue }
            if errno == EINTR { continue }
            if errno == EINVAL && fd != handle.fd {
                // Opened with O_DIRECT but the file system refuses such writes: go buffered.
                directHandle = nil
                fd = handle.fd
                continue
            }
            throw SystemError("write", path)
        }
        condition.lock()
        if retaining {
            retained.append((start, pending, pendingCount))
            while retained.count > Self.retainedLimit { spare.append(retained.removeFirst().block) }
            pending = spare.popLast() ?? .allocate(byteCount: Self.blockSize, alignment: 4096)
        }
        pendingCount = 0
        length += Int64(written)
        let now = length
        condition.broadcast()
        condition.unlock()
        if directHandle == nil, now / (64 << 20) != start / (64 << 20) { handle.startWriteback(from: 0, length: 0) }
        onProgress(now)
    }

    func restart() throws {
        pendingCount = 0
        try handle.truncate(to: 0)
        hasher = DigestHasher()
        received = 0
        condition.lock()
        spare += retained.map(\.block)
        retained = []
        length = 0
        generation += 1
        condition.broadcast()
        condition.unlock()
        onProgress(0)
    }

    func digest() -> Digest { hasher.finalize() }

    /// Writes what is pending and wakes readers: no more bytes will come (or they never will,
    /// if `error`).
    func end(error: (any Error)? = nil) throws {
        if error == nil { try flush() }
        condition.lock()
        ended = true
        failure = error
        condition.broadcast()
        condition.unlock()
    }

    /// Blocks until bytes beyond `offset` exist; returns how many are readable (0 at the end).
    func waitForBytes(after offset: Int64, generation seen: Int) throws -> Int64 {
        condition.lock()
        defer { condition.unlock() }
        while true {
            if generation != seen { throw Restarted() }
            if let failure { throw failure }
            if length > offset { return length - offset }
            if ended { return 0 }
            condition.wait()
        }
    }

    /// Reads for the follower: from a retained block when it holds `offset` (blocks before
    /// it are let go), else from the file.
    func readFollowing(into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) throws -> Int {
        condition.lock()
        while let first = retained.first, first.start + Int64(first.count) <= offset {
            spare.append(retained.removeFirst().block)
        }
        if let held = retained.first, held.start <= offset {
            let from = Int(offset - held.start)
            let n = min(buffer.count, held.count - from)
            UnsafeMutableRawBufferPointer(rebasing: buffer[0..<n])
                .copyMemory(from: UnsafeRawBufferPointer(rebasing: held.block[from..<from + n]))
            condition.unlock()
            return n
        }
        condition.unlock()
        return try handle.read(into: buffer, at: offset)
    }

    var currentGeneration: Int {
        condition.lock()
        defer { condition.unlock() }
        return generation
    }
}

/// Reads a `PartialBlob` from the start, following it as it grows.
final class FollowingReader: ByteSourceAdapter {
    private let blob: PartialBlob
    private let generation: Int
    private var offset: Int64 = 0

    init(_ blob: PartialBlob) {
        self.blob = blob
        self.generation = blob.currentGeneration
    }

    override func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        let available = try blob.waitForBytes(after: offset, generation: generation)
        guard available > 0 else { return 0 }
        let want = Int(min(Int64(buffer.count), available))
        let n = try blob.readFollowing(into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<want]), at: offset)
        offset += Int64(n)
        return n
    }
}
