import CLinux
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Owns one open file descriptor and closes it exactly once. The only place imgvol keeps raw
/// descriptors for files it reads and writes.
public final class OpenFile: Sendable {
    public let fd: Int32
    public let path: String
    /// Closed by `close` or at deinit, whichever comes first, exactly once.
    private let closed = Atomic<Bool>(false)

    public init(adopting fd: Int32, path: String) {
        self.fd = fd
        self.path = path
    }

    public convenience init(path: String, flags: Int32, mode: mode_t = 0o644) throws(SystemError) {
        let fd = try retryingEINTR("open", path) { open(path, flags | O_CLOEXEC, mode) }
        self.init(adopting: fd, path: path)
    }

    public static func openRead(_ path: String) throws(SystemError) -> OpenFile {
        try OpenFile(path: path, flags: O_RDONLY)
    }

    /// O_DIRECT, which Swift's Glibc module does not export (x86_64 and arm64 differ).
    public static let directFlag: Int32 = imgvol_o_direct()

    /// A second descriptor on the same inode that writes around the page cache, or nil where
    /// the file system refuses O_DIRECT (tmpfs). Reopened through /proc/self/fd, so no path
    /// is looked up again.
    public func reopenForDirectWrites() -> OpenFile? {
        let fd = open("/proc/self/fd/\(self.fd)", O_WRONLY | O_CLOEXEC | Self.directFlag)
        return fd < 0 ? nil : OpenFile(adopting: fd, path: path)
    }

    /// A second read-only descriptor on the same inode, with its own file position and
    /// read-ahead state; nil if it cannot be opened.
    public func reopenForReading() -> OpenFile? {
        let fd = open("/proc/self/fd/\(self.fd)", O_RDONLY | O_CLOEXEC)
        return fd < 0 ? nil : OpenFile(adopting: fd, path: path)
    }

    deinit { close() }

    public func close() {
        guard !closed.exchange(true, ordering: .acquiringAndReleasing) else { return }
        Glibc.close(fd)
    }

    public func size() throws(SystemError) -> Int64 {
        var st = stat()
        _ = try retryingEINTR("fstat", path) { fstat(fd, &st) }
        return Int64(st.st_size)
    }

    public func writeAll(_ buffer: UnsafeRawBufferPointer) throws(SystemError) {
        guard var base = buffer.baseAddress else { return }
        var left = buffer.count
        while left > 0 {
            let n = try retryingEINTR("write", path) { Glibc.write(fd, base, left) }
            base += n
            left -= n
        }
    }

    public func writeAll(_ bytes: [UInt8]) throws(SystemError) {
        try bytes.withUnsafeBytes { b in Result { () throws(SystemError) in try writeAll(b) } }.get()
    }

    /// Writes all of `buffer` at `offset` (pwrite), leaving the file position alone.
    public func writeAll(_ buffer: UnsafeRawBufferPointer, at offset: Int64) throws(SystemError) {
        guard let base = buffer.baseAddress else { return }
        var done = 0
        while done < buffer.count {
            done += try retryingEINTR("pwrite", path) { pwrite(fd, base + done, buffer.count - done, off_t(offset) + off_t(done)) }
        }
    }

    /// Reads up to `buffer.count` bytes at `offset`; fewer only at end of file.
    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) throws(SystemError) -> Int {
        guard let base = buffer.baseAddress else { return 0 }
        var done = 0
        while done < buffer.count {
            let n = try retryingEINTR("pread", path) { pread(fd, base + done, buffer.count - done, off_t(offset) + off_t(done)) }
            if n == 0 { break }
            done += n
        }
        return done
    }

    public func truncate(to length: Int64) throws(SystemError) {
        _ = try retryingEINTR("ftruncate", path) { ftruncate(fd, off_t(length)) }
    }

    public func sync() throws(SystemError) {
        _ = try retryingEINTR("fsync", path) { fsync(fd) }
    }

    /// Starts write-back of what has been written so far, so the final fsync of a large file
    /// has little left to do.
    public func startWriteback(from offset: Int64, length: Int64) {
        _ = imgvol_sync_file_range_write(fd, offset, length)
    }

    /// Advisory whole-file lock (flock): held until close or process death, so a killed
    /// pull never leaves a lock behind.
    public func tryLock(exclusive: Bool = true) throws(SystemError) -> Bool {
        switch failure(of: { flock(fd, (exclusive ? LOCK_EX : LOCK_SH) | LOCK_NB) }) {
        case nil: return true
        case EWOULDBLOCK?: return false
        case let error?: throw SystemError("flock", path, errno: error)
        }
    }
}
