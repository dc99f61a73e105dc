#if canImport(Glibc)
import Glibc
#endif

/// Writes a new file sequentially through O_DIRECT in 4 MiB aligned blocks, for large files
/// nobody reads while they are written: it skips the copy into the page cache, the largest
/// CPU cost of writing a layer on these machines. The unaligned tail goes through an ordinary
/// descriptor; where O_DIRECT is refused (tmpfs) everything does.
public final class DirectWriter {
    static let blockSize = 4 << 20
    /// O_DIRECT, which Swift's Glibc module does not export.
    static let oDirect: Int32 = 0o40000

    public let path: String
    private let buffered: OpenFile
    private var direct: OpenFile?
    private let buffer: UnsafeMutableRawBufferPointer
    private var filled = 0
    public private(set) var written: Int64 = 0

    public init(path: String) throws(SystemError) {
        self.path = path
        buffered = try OpenFile(path: path, flags: O_WRONLY | O_CREAT | O_TRUNC, mode: 0o600)
        direct = try? OpenFile(path: path, flags: O_WRONLY | Self.oDirect)
        buffer = .allocate(byteCount: Self.blockSize, alignment: 4096)
    }

    deinit { buffer.deallocate() }

    public func write(_ bytes: UnsafeRawBufferPointer) throws(SystemError) {
        var rest = bytes
        while !rest.isEmpty {
            let n = min(rest.count, buffer.count - filled)
            if let base = buffer.baseAddress, let source = rest.baseAddress {
                (base + filled).copyMemory(from: source, byteCount: n)
            }
            filled += n
            rest = UnsafeRawBufferPointer(rebasing: rest[n...])
            if filled == buffer.count { try flushBlock() }
        }
    }

    /// A file system may accept O_DIRECT at open and still refuse the write (EINVAL): then
    /// the block, and every later one, goes through the page cache.
    private func flushBlock() throws(SystemError) {
        guard let direct else { return try flush(using: buffered) }
        do {
            try flush(using: direct)
        } catch where error.errno == EINVAL {
            self.direct = nil
            try flush(using: buffered)
        }
    }

    /// Writes the tail and fsyncs.
    public func finish() throws(SystemError) {
        try flush(using: buffered)
        try buffered.sync()
    }

    private func flush(using file: OpenFile) throws(SystemError) {
        guard filled > 0, let base = buffer.baseAddress else { return }
        var done = 0
        while done < filled {
            let n = try retryingEINTR("write", path) { pwrite(file.fd, base + done, filled - done, off_t(written) + off_t(done)) }
            done += n
        }
        written += Int64(filled)
        filled = 0
    }
}
