import FileIO
import Foundation
import Layers
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A few threads creating regular files and copying their bytes out of the layer tars, one
/// directory per job. The queue is bounded, so the walk producing jobs holds only a few
/// directory descriptors open at a time.
final class FileWriterPool: @unchecked Sendable {
    struct File {
        let name: String
        let path: String
        let node: ImageTree.Inode
    }

    /// The files of one directory; the pool closes `directoryFD` when done with it.
    struct Job {
        let directoryFD: Int32
        let files: [File]
        /// New files there belong to the process (the directory has no setgid bit).
        let ownedByProcess: Bool
    }

    /// Files smaller than this are copied with pread/write through a buffer: for them,
    /// copy_file_range's in-kernel splice setup costs more than the copy.
    static let bufferSize = 1 << 20
    /// Files this large are copied in `pieces` concurrent parts.
    static let pieceThreshold: Int64 = 64 << 20
    static let pieces = 4
    /// Files this large are written around the page cache.
    static let directThreshold: Int64 = 64 << 20
    static let directBufferSize = 4 << 20

    let metadata: MetadataWriter
    private let sources: [OpenFile]
    private let condition = NSCondition()
    private var queue: [Job] = []
    private let capacity: Int
    private var running: Int
    private var closing = false
    private var failure: (any Error)?

    init(workers: Int, sources: [OpenFile], metadata: MetadataWriter) {
        self.sources = sources
        self.metadata = metadata
        capacity = workers * 8
        running = workers
        for n in 0..<workers {
            let thread = Thread { [self] in work() }
            thread.name = "imgvol-unpack-\(n)"
            thread.stackSize = 512 << 10
            thread.start()
        }
    }

    /// Queues a job, waiting while the queue is full. Throws a writer's failure, so the walk
    /// stops at the first error.
    func submit(_ job: Job) throws {
        condition.lock()
        defer { condition.unlock() }
        while failure == nil, queue.count >= capacity { condition.wait() }
        if let failure {
            close(job.directoryFD)
            throw failure
        }
        queue.append(job)
        condition.signal()
    }

    /// Waits for every queued job (or the first failure) and ends the threads.
    func finish() throws {
        condition.lock()
        defer { condition.unlock() }
        closing = true
        condition.broadcast()
        while running > 0 { condition.wait() }
        if let failure { throw failure }
    }

    private func work() {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: Self.bufferSize, alignment: 4096)
        defer { buffer.deallocate() }
        condition.lock()
        while true {
            while queue.isEmpty, !closing { condition.wait() }
            guard !queue.isEmpty else { break }
            let job = queue.removeFirst()
            let skip = failure != nil
            condition.broadcast()
            condition.unlock()
            var error: (any Error)?
            if !skip {
                do { try write(job, buffer: buffer) } catch let e { error = e }
            }
            close(job.directoryFD)
            condition.lock()
            if let error, failure == nil { failure = error }
        }
        running -= 1
        condition.broadcast()
        condition.unlock()
    }

    private func write(_ job: Job, buffer: UnsafeMutableRawBufferPointer) throws {
        for file in job.files {
            let mode = MetadataWriter.creationMode(file.node)
            let target = OpenFile(adopting: try retryingEINTR("create", file.path) {
                openat(job.directoryFD, file.name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode)
            }, path: file.path)
            defer { target.close() }
            if file.node.size > 0 {
                let layer = sources[Int(file.node.layer)]
                // A file stored apart (`LayerSplit`) is its own source, from offset 0.
                let apart = file.node.storedApart
                    ? try OpenFile.openRead(LayerSplit.path(in: LayerSplit.directory(forTar: layer.path), offset: file.node.dataOffset))
                    : nil
                defer { apart?.close() }
                let source = apart ?? layer
                let offset = apart == nil ? file.node.dataOffset : 0
                if file.node.size < Self.bufferSize {
                    try copyByReading(from: source, offset: offset, count: file.node.size, to: target, buffer: buffer)
                } else {
                    try copyInPieces(from: source, offset: offset, count: file.node.size, to: target)
                }
            }
            try metadata.apply(file.node, to: target.fd, path: file.path,
                               created: .init(mode: mode, ownedByProcess: job.ownedByProcess))
        }
    }

    /// A big file is copied as a few pieces at once: with the layer tar not in the page cache
    /// (pulled long ago, or an uncompressed layer fetched in one stream with O_DIRECT), one
    /// sequential copy waits for each read in turn. From `directThreshold` on, the pieces are
    /// written with O_DIRECT (`OpenFile.copyRangeDirect`).
    private func copyInPieces(from source: OpenFile, offset: Int64, count: Int64, to target: OpenFile) throws {
        let pieces = count >= Self.pieceThreshold ? Self.pieces : 1
        let direct = count >= Self.directThreshold ? target.reopenForDirectWrites() : nil
        defer { direct?.close() }
        // Rounded up twice (to a share, then to whole buffers), so the pieces cover every byte
        // and each starts on a buffer boundary (which O_DIRECT needs).
        let share = (count + Int64(pieces) - 1) / Int64(pieces)
        let pieceSize = (share + Int64(Self.bufferSize) - 1) / Int64(Self.bufferSize) * Int64(Self.bufferSize)
        let failure = Mutex<(any Error)?>(nil)
        DispatchQueue.concurrentPerform(iterations: pieces) { piece in
            let start = Int64(piece) * pieceSize
            let length = min(pieceSize, count - start)
            guard length > 0 else { return }
            do {
                try copy(from: source, offset: offset + start, count: length, to: target, at: start, direct: direct)
            } catch {
                failure.withLock { if $0 == nil { $0 = error } }
            }
        }
        if let error = failure.withLock({ $0 }) { throw error }
    }

    /// Copies a range, turning a source that ends early into the unpack error that names the
    /// file. A direct copy the file system refuses is done again in full through the cache.
    private func copy(from source: OpenFile, offset: Int64, count: Int64, to target: OpenFile, at start: Int64,
                      direct: OpenFile?) throws {
        do {
            if let direct {
                let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: Self.directBufferSize, alignment: OpenFile.directAlignment)
                defer { buffer.deallocate() }
                do {
                    try target.copyRangeDirect(from: source, at: offset, count: count, to: start, direct: direct, buffer: buffer)
                    return
                } catch is OpenFile.DirectRefused {}
            }
            try target.copyRange(from: source, at: offset, count: count, to: start, bufferSize: Self.bufferSize)
        } catch is OpenFile.SourceEnded {
            throw Unpacker.Failure(path: target.path, reason: "layer data ends early")
        }
    }

    private func copyByReading(from source: OpenFile, offset: Int64, count: Int64, to target: OpenFile,
                               buffer: UnsafeMutableRawBufferPointer) throws {
        do { try target.copyRangeByReading(from: source, at: offset, count: count, to: 0, buffer: buffer) } catch is OpenFile.SourceEnded {
            throw Unpacker.Failure(path: target.path, reason: "layer data ends early")
        }
    }
}
