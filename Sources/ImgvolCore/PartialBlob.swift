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

    init(path: String, onProgress: @escaping @Sendable (Int64) -> Void) throws {
        self.path = path
        self.onProgress = onProgress
        handle = try OpenFile(path: path, flags: O_RDWR | O_CREAT, mode: 0o600)
        try resumeFromExisting()
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

    var count: Int64 {
        condition.lock()
        defer { condition.unlock() }
        return length
    }

    func append(_ bytes: UnsafeRawBufferPointer) throws {
        guard let base = bytes.baseAddress else { return }
        var written = 0
        let start = count
        while written < bytes.count {
            let n = try retryingEINTR("write", path) { pwrite(handle.fd, base + written, bytes.count - written, off_t(start) + off_t(written)) }
            written += n
        }
        hasher.update(bytes)
        condition.lock()
        length += Int64(bytes.count)
        let now = length
        condition.broadcast()
        condition.unlock()
        if now / (64 << 20) != start / (64 << 20) { handle.startWriteback(from: 0, length: 0) }
        onProgress(now)
    }

    func restart() throws {
        try handle.truncate(to: 0)
        hasher = DigestHasher()
        condition.lock()
        length = 0
        generation += 1
        condition.broadcast()
        condition.unlock()
        onProgress(0)
    }

    func digest() -> Digest { hasher.finalize() }

    /// Wakes readers: no more bytes will come (or they never will, if `error`).
    func end(error: (any Error)? = nil) {
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
        let n = try blob.handle.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<want]), at: offset)
        offset += Int64(n)
        return n
    }
}
