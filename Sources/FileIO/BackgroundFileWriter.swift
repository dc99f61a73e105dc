import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Writes a new file sequentially on a thread of its own, a few blocks behind the producer,
/// starting write-back of each block as it lands so the final fsync has little left to do:
/// a decompressor that wrote (and waited) itself would take its CPU time plus the disk's
/// time instead of the larger of the two.
///
/// The file goes through the page cache, not O_DIRECT: what is written is read again at once
/// (by `imgvol unpack`, by a mount's first reads, by the indexer following the writer).
///
/// Unchecked: one producer alone calls `write`, `skip` and `finish`, and owns `current`,
/// `filled`, `offset` and `finished`; any thread may follow the file with `waitForBytes` or
/// call `abandon`, which go through the sink's monitor.
public final class BackgroundFileWriter: @unchecked Sendable {
    /// Blocks start small and grow once the file is big: a block's memory is fresh pages the
    /// first time it is filled, which a small layer should not pay for 4 MiB at a time, while
    /// past 64 MiB larger blocks halve the writes and write-back calls.
    static let smallBlockSize = 1 << 20
    static let blockSize = 4 << 20
    static let growAt: Int64 = 64 << 20
    /// Blocks in flight: one being filled, the others queued or being written.
    static let depth = 4

    public let path: String
    private let file: OpenFile
    private let sink: BlockSink
    private var current: UnsafeMutableRawBufferPointer
    private var filled = 0
    private var offset: Int64 = 0
    /// Every byte is in the file and synced (set by `finish`, read by its caller's thread).
    public private(set) var finished = false

    public init(path: String) throws(SystemError) {
        self.path = path
        file = try OpenFile(path: path, flags: O_WRONLY | O_CREAT | O_TRUNC, mode: 0o600)
        sink = try BlockSink(file: file, blockSize: Self.smallBlockSize, depth: Self.depth)
        current = try sink.takeFree(size: Self.smallBlockSize)
    }

    deinit { sink.stop() }

    /// Bytes handed to `write` so far.
    public var written: Int64 { offset + Int64(filled) }

    private var nextBlockSize: Int { offset >= Self.growAt ? Self.blockSize : Self.smallBlockSize }

    public func write(_ bytes: UnsafeRawBufferPointer) throws(SystemError) {
        var rest = bytes
        while !rest.isEmpty {
            if current.fill(&filled, from: &rest) {
                try sink.submit(current, count: filled, at: offset)
                offset += Int64(filled)
                filled = 0
                current = try sink.takeFree(size: nextBlockSize)
            }
        }
    }

    /// Leaves `count` bytes unwritten (a hole: they read as zeros) and goes on after them.
    public func skip(_ count: Int64) throws(SystemError) {
        guard count > 0 else { return }
        if filled > 0 {
            try sink.submit(current, count: filled, at: offset)
            offset += Int64(filled)
            filled = 0
            current = try sink.takeFree(size: nextBlockSize)
        }
        try sink.submitHole(at: offset, count: count)
        offset += count
    }

    /// Writes the tail, waits for every block to reach the file, and fsyncs unless the caller
    /// syncs another way.
    public func finish(sync: Bool = true) throws(SystemError) {
        if filled > 0 {
            try sink.submit(current, count: filled, at: offset)
            offset += Int64(filled)
            filled = 0
        }
        try sink.drain()
        // A hole at the end is no write: the length is set instead.
        if try file.size() < offset { try file.truncate(to: offset) }
        sink.end()
        if sync { try file.sync() }
        finished = true
    }

    /// No more bytes will come (the producer failed): followers stop waiting.
    public func abandon() { sink.end() }

    /// Blocks until bytes up to `end` are in the file, or no more will come, and returns how
    /// many bytes the file holds: a reader can follow the file while it is written (blocks
    /// reach the file in order).
    public func waitForBytes(upTo end: Int64) -> Int64 {
        sink.waitForBytes(upTo: end)
    }
}

/// The writer thread's side of a `BackgroundFileWriter`: a queue of filled blocks and a pool
/// of free ones, behind one monitor. The thread holds the sink, never the writer, so dropping
/// the writer (on an error) stops the thread.
final class BlockSink: Sendable {
    /// A block of bytes, or (no buffer) a hole the writer steps over.
    struct Block {
        let buffer: UnsafeMutableRawBufferPointer?
        let count: Int64
        let offset: Int64
    }

    struct Blocks {
        var free: [UnsafeMutableRawBufferPointer]
        /// Every block, wherever it is (free, queued, or being filled): freed with the sink.
        var all: [UnsafeMutableRawBufferPointer]
        var queue: [Block] = []
        var writing = false
        var stopping = false
        var stopped = false
        var failure: SystemError?
        /// Bytes `[0, inFile)` are in the file: blocks are queued and written in order.
        var inFile: Int64 = 0
        /// No more bytes will come (finished, failed or stopped).
        var ended = false
    }

    private let file: OpenFile
    private let blocks: Monitor<Blocks>

    init(file: OpenFile, blockSize: Int, depth: Int) throws(SystemError) {
        self.file = file
        let all = (0..<depth).map { _ in UnsafeMutableRawBufferPointer.allocate(byteCount: blockSize, alignment: 4096) }
        blocks = Monitor(Blocks(free: all, all: all))
        do {
            try BlockingThreads.start { [self] in run() }
        } catch {
            blocks.update { $0.stopped = true }
            throw error
        }
    }

    deinit { blocks.update { $0.all.forEach { $0.deallocate() } } }

    /// A block of `size` bytes to fill (a free block of another size is replaced); waits
    /// while every block is queued. Throws the writer thread's error.
    func takeFree(size: Int) throws(SystemError) -> UnsafeMutableRawBufferPointer {
        let taken: Result<UnsafeMutableRawBufferPointer, SystemError> = blocks.wait(wake: .none) { blocks in
            if let failure = blocks.failure { return .failure(failure) }
            guard !blocks.free.isEmpty else { return nil }
            let block = blocks.free.removeLast()
            guard block.count != size, let slot = blocks.all.firstIndex(where: { $0.baseAddress == block.baseAddress }) else {
                return .success(block)
            }
            block.deallocate()
            blocks.all[slot] = .allocate(byteCount: size, alignment: 4096)
            return .success(blocks.all[slot])
        }
        return try taken.get()
    }

    func submit(_ buffer: UnsafeMutableRawBufferPointer, count: Int, at offset: Int64) throws(SystemError) {
        try enqueue(Block(buffer: buffer, count: Int64(count), offset: offset))
    }

    func submitHole(at offset: Int64, count: Int64) throws(SystemError) {
        try enqueue(Block(buffer: nil, count: count, offset: offset))
    }

    private func enqueue(_ block: Block) throws(SystemError) {
        let failure: SystemError? = blocks.update { blocks in
            if let failure = blocks.failure { return failure }
            blocks.queue.append(block)
            return nil
        }
        if let failure { throw failure }
    }

    /// Waits until every queued block is written.
    func drain() throws(SystemError) {
        let failure: SystemError?? = blocks.wait(wake: .none) { blocks in
            if let failure = blocks.failure { return .some(failure) }
            return blocks.queue.isEmpty && !blocks.writing ? .some(nil) : nil
        }
        if let failure, let failure { throw failure }
    }

    /// Ends the thread once it has written what is queued, and waits for it.
    func stop() {
        blocks.update { blocks in
            blocks.stopping = true
            blocks.ended = true
        }
        blocks.wait(wake: .none) { $0.stopped ? () : nil }
    }

    /// Every byte is in the file: followers stop waiting.
    func end() { blocks.update { $0.ended = true } }

    func waitForBytes(upTo end: Int64) -> Int64 {
        blocks.wait(wake: .none) { blocks in
            blocks.inFile >= end || blocks.ended || blocks.failure != nil ? blocks.inFile : nil
        }
    }

    private func run() {
        while true {
            let next: Block? = blocks.wait(wake: .none) { blocks in
                if blocks.queue.isEmpty, !blocks.stopping { return nil }
                if blocks.queue.isEmpty || blocks.failure != nil { return .some(nil) }
                blocks.writing = true
                return .some(blocks.queue.removeFirst())
            }
            guard let block = next else { break }
            let error = write(block)
            blocks.update { blocks in
                blocks.writing = false
                if let error, blocks.failure == nil { blocks.failure = error }
                if error == nil { blocks.inFile = block.offset + block.count }
                if let buffer = block.buffer { blocks.free.append(buffer) }
            }
        }
        blocks.update { $0.stopped = true }
    }

    private func write(_ block: Block) -> SystemError? {
        guard let buffer = block.buffer else { return nil }
        do {
            try file.writeAll(UnsafeRawBufferPointer(rebasing: buffer[0..<Int(block.count)]), at: block.offset)
            file.startWriteback(from: block.offset, length: block.count)
            return nil
        } catch {
            return error
        }
    }
}
