import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Writes a new file sequentially through O_DIRECT in 4 MiB aligned blocks, for large files
/// not read again soon (a follower reads behind the writer from disk, not from the page
/// cache): it skips the copy into the page cache, the largest CPU cost of writing a layer on
/// these machines. The unaligned tail goes through an ordinary
/// descriptor; where O_DIRECT is refused (tmpfs) everything does.
///
/// The writes happen on a thread of their own, a few blocks behind the producer: an O_DIRECT
/// write returns only once the device has the block, and a decompressor that waited for each
/// one took its CPU time plus the disk's time instead of the larger of the two.
///
/// One producer calls `write` and `finish`; any thread may follow the file with
/// `waitForBytes` or call `abandon` (those go through the sink's lock), hence unchecked.
public final class DirectWriter: @unchecked Sendable {
    static let blockSize = 4 << 20
    /// Blocks in flight: one being filled, the others queued or being written.
    static let depth = 4
    /// O_DIRECT, which Swift's Glibc module does not export.
    static let oDirect: Int32 = 0o40000

    public let path: String
    private let buffered: OpenFile
    private let sink: BlockSink
    private var current: UnsafeMutableRawBufferPointer
    private var filled = 0
    private var offset: Int64 = 0
    /// Every byte is in the file and synced (set by `finish`, read by its caller's thread).
    public private(set) var finished = false

    public init(path: String) throws(SystemError) {
        self.path = path
        buffered = try OpenFile(path: path, flags: O_WRONLY | O_CREAT | O_TRUNC, mode: 0o600)
        let direct = try? OpenFile(path: path, flags: O_WRONLY | Self.oDirect)
        sink = BlockSink(path: path, buffered: buffered, direct: direct, blockSize: Self.blockSize, depth: Self.depth)
        current = try sink.takeFree()
    }

    deinit { sink.stop() }

    /// Bytes handed to `write` so far.
    public var written: Int64 { offset + Int64(filled) }

    public func write(_ bytes: UnsafeRawBufferPointer) throws(SystemError) {
        var rest = bytes
        while !rest.isEmpty {
            let n = min(rest.count, current.count - filled)
            if let base = current.baseAddress, let source = rest.baseAddress {
                (base + filled).copyMemory(from: source, byteCount: n)
            }
            filled += n
            rest = UnsafeRawBufferPointer(rebasing: rest[n...])
            if filled == current.count {
                try sink.submit(current, count: filled, at: offset)
                offset += Int64(filled)
                filled = 0
                current = try sink.takeFree()
            }
        }
    }

    /// Writes the tail, waits for every block to reach the file, and fsyncs.
    public func finish() throws(SystemError) {
        if filled > 0 {
            try sink.submit(current, count: filled, at: offset)
            offset += Int64(filled)
            filled = 0
        }
        try sink.drain()
        sink.end()
        try buffered.sync()
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

/// The writer thread's side of a `DirectWriter`: a queue of filled blocks and a pool of free
/// ones, under one condition. The thread holds the sink, never the writer, so dropping the
/// writer (on an error) stops the thread.
final class BlockSink: @unchecked Sendable {
    private struct Block {
        let buffer: UnsafeMutableRawBufferPointer
        let count: Int
        let offset: Int64
    }

    private let path: String
    private let buffered: OpenFile
    private var direct: OpenFile?
    private let condition = NSCondition()
    private var free: [UnsafeMutableRawBufferPointer]
    private let all: [UnsafeMutableRawBufferPointer]
    private var queue: [Block] = []
    private var writing = false
    private var stopping = false
    private var stopped = false
    private var failure: SystemError?
    /// Bytes `[0, inFile)` are in the file: blocks are queued and written in order.
    private var inFile: Int64 = 0
    /// No more bytes will come (finished, failed or stopped).
    private var ended = false

    init(path: String, buffered: OpenFile, direct: OpenFile?, blockSize: Int, depth: Int) {
        self.path = path
        self.buffered = buffered
        self.direct = direct
        all = (0..<depth).map { _ in .allocate(byteCount: blockSize, alignment: 4096) }
        free = all
        let thread = Thread { [self] in run() }
        thread.name = "imgvol-writer"
        thread.stackSize = 256 << 10
        thread.start()
    }

    deinit { all.forEach { $0.deallocate() } }

    /// A block to fill; waits while every block is queued. Throws the writer thread's error.
    func takeFree() throws(SystemError) -> UnsafeMutableRawBufferPointer {
        condition.lock()
        defer { condition.unlock() }
        while failure == nil, free.isEmpty { condition.wait() }
        if let failure { throw failure }
        return free.removeLast()
    }

    func submit(_ buffer: UnsafeMutableRawBufferPointer, count: Int, at offset: Int64) throws(SystemError) {
        condition.lock()
        defer { condition.unlock() }
        if let failure { throw failure }
        queue.append(Block(buffer: buffer, count: count, offset: offset))
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
            if error == nil { inFile = block.offset + Int64(block.count) }
            free.append(block.buffer)
            condition.broadcast()
        }
        stopped = true
        condition.broadcast()
        condition.unlock()
    }

    /// Full blocks go through O_DIRECT; a file system may accept O_DIRECT at open and still
    /// refuse the write (EINVAL): then that block, and every later one, goes through the page
    /// cache, as does the unaligned tail.
    private func write(_ block: Block) -> SystemError? {
        if block.count == block.buffer.count, let direct {
            do {
                try direct.writeAll(UnsafeRawBufferPointer(rebasing: block.buffer[0..<block.count]), at: block.offset)
                return nil
            } catch where error.errno == EINVAL {
                self.direct = nil
            } catch {
                return error
            }
        }
        do {
            try buffered.writeAll(UnsafeRawBufferPointer(rebasing: block.buffer[0..<block.count]), at: block.offset)
            return nil
        } catch {
            return error
        }
    }
}
