import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Writes a new file sequentially on a thread of its own, a few 4 MiB blocks behind the
/// producer, starting write-back of each block as it lands so the final fsync has little
/// left to do. A decompressor that wrote (and waited) itself took its CPU time plus the
/// disk's time instead of the larger of the two.
///
/// The file goes through the page cache. O_DIRECT saved the copy into it, but what is
/// written is read again at once: by `imgvol unpack`, by a mount's first reads, and by the
/// indexer following the writer. Read back cold, a 1 GiB layer cost `unpack` 0.8-1.1 s;
/// from the page cache, 0.4 s (the pull itself takes 0.2-0.3 s longer).
///
/// One producer calls `write` and `finish`; any thread may follow the file with
/// `waitForBytes` or call `abandon` (those go through the sink's lock), hence unchecked.
public final class BackgroundFileWriter: @unchecked Sendable {
    /// Blocks start small and grow once the file is big. A block's memory is fresh pages the
    /// first time it is filled, at about 2 µs each on these VMs: a 46 MB layer tar written
    /// through four 4 MiB blocks paid for 16 MiB of them (three layers at once, in C's pull).
    /// Past 64 MiB the larger blocks halve the writes and write-back calls: 1 MiB blocks
    /// throughout made a 1 GiB layer's pull 18% slower.
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
        sink = BlockSink(file: file, blockSize: Self.smallBlockSize, depth: Self.depth)
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

/// The writer thread's side of a `BackgroundFileWriter`: a queue of filled blocks and a pool of free
/// ones, under one condition. The thread holds the sink, never the writer, so dropping the
/// writer (on an error) stops the thread.
final class BlockSink: @unchecked Sendable {
    /// A block of bytes, or (no buffer) a hole the writer steps over.
    private struct Block {
        let buffer: UnsafeMutableRawBufferPointer?
        let count: Int64
        let offset: Int64
    }

    private let file: OpenFile
    private let condition = NSCondition()
    private var free: [UnsafeMutableRawBufferPointer]
    /// Every block, wherever it is (free, queued, or being filled): freed with the sink.
    private var all: [UnsafeMutableRawBufferPointer]
    private var queue: [Block] = []
    private var writing = false
    private var stopping = false
    private var stopped = false
    private var failure: SystemError?
    /// Bytes `[0, inFile)` are in the file: blocks are queued and written in order.
    private var inFile: Int64 = 0
    /// No more bytes will come (finished, failed or stopped).
    private var ended = false

    init(file: OpenFile, blockSize: Int, depth: Int) {
        self.file = file
        all = (0..<depth).map { _ in .allocate(byteCount: blockSize, alignment: 4096) }
        free = all
        let thread = Thread { [self] in run() }
        thread.name = "imgvol-writer"
        thread.stackSize = 256 << 10
        thread.start()
    }

    deinit { all.forEach { $0.deallocate() } }

    /// A block of `size` bytes to fill (a free block of another size is replaced); waits
    /// while every block is queued. Throws the writer thread's error.
    func takeFree(size: Int) throws(SystemError) -> UnsafeMutableRawBufferPointer {
        condition.lock()
        defer { condition.unlock() }
        while failure == nil, free.isEmpty { condition.wait() }
        if let failure { throw failure }
        let block = free.removeLast()
        guard block.count != size, let slot = all.firstIndex(where: { $0.baseAddress == block.baseAddress }) else { return block }
        block.deallocate()
        all[slot] = .allocate(byteCount: size, alignment: 4096)
        return all[slot]
    }

    func submit(_ buffer: UnsafeMutableRawBufferPointer, count: Int, at offset: Int64) throws(SystemError) {
        condition.lock()
        defer { condition.unlock() }
        if let failure { throw failure }
        queue.append(Block(buffer: buffer, count: Int64(count), offset: offset))
        condition.broadcast()
    }

    func submitHole(at offset: Int64, count: Int64) throws(SystemError) {
        condition.lock()
        defer { condition.unlock() }
        if let failure { throw failure }
        queue.append(Block(buffer: nil, count: count, offset: offset))
        condition.broadcast()
    }

    /// Waits until every queued block is written.
    func drain() throws(SystemError) {
        condition.lock()
        defer { condition.unlock() }
        while failure == nil, !queue.isEmpty || writing { condition.wait() }
        if let failure { throw failure }
    }

    /// Ends the thread once it has written what is queued, and waits for it.
    func stop() {
        condition.lock()
        stopping = true
        ended = true
        condition.broadcast()
        while !stopped { condition.wait() }
        condition.unlock()
    }

    /// Every byte is in the file: followers stop waiting.
    func end() {
        condition.lock()
        ended = true
        condition.broadcast()
        condition.unlock()
    }

    func waitForBytes(upTo end: Int64) -> Int64 {
        condition.lock()
        defer { condition.unlock() }
        while inFile < end, !ended, failure == nil { condition.wait() }
        return inFile
    }

    private func run() {
        condition.lock()
        while true {
            while queue.isEmpty, !stopping { condition.wait() }
            if queue.isEmpty || failure != nil { break }
            let block = queue.removeFirst()
            writing = true
            condition.unlock()
            let error = write(block)
            condition.lock()
            writing = false
            if let error, failure == nil { failure = error }
            if error == nil { inFile = block.offset + block.count }
            if let buffer = block.buffer { free.append(buffer) }
            condition.broadcast()
        }
        stopped = true
        condition.broadcast()
        condition.unlock()
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
