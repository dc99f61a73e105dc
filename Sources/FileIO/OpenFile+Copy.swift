import CLinux
#if canImport(Glibc)
import Glibc
#endif

/// Copying a byte range from one open file into another, for `unpack` and for putting a
/// split file back into its layer tar.
extension OpenFile {
    /// The source ended before `count` bytes were copied.
    public struct SourceEnded: Error {}

    /// In-kernel copy (reflinked where the file system can share extents); read and write
    /// where the file system refuses copy_file_range.
    public func copyRange(from source: OpenFile, at offset: Int64, count: Int64, to start: Int64, bufferSize: Int) throws {
        var done: Int64 = 0
        while done < count {
            var n: Int64 = 0
            let error = failure { n = imgvol_copy_file_range(source.fd, offset + done, fd, start + done, Int(min(count - done, 1 << 30))); return n }
            if error == nil, n > 0 { done += n; continue }
            if error == nil { throw SourceEnded() }
            if let error, [EXDEV, ENOSYS, EINVAL, EOPNOTSUPP].contains(error) {
                let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: bufferSize, alignment: 4096)
                defer { buffer.deallocate() }
                try copyRangeByReading(from: source, at: offset + done, count: count - done, to: start + done, buffer: buffer)
                return
            }
            throw SystemError("copy_file_range", path, errno: error ?? EIO)
        }
    }

    /// Through `buffer`: for small ranges, where copy_file_range's setup costs more than the copy.
    public func copyRangeByReading(from source: OpenFile, at offset: Int64, count: Int64, to start: Int64,
                                   buffer: UnsafeMutableRawBufferPointer) throws {
        var done: Int64 = 0
        while done < count {
            let chunk = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<Int(min(Int64(buffer.count), count - done))])
            let n = try source.read(into: chunk, at: offset + done)
            guard n > 0 else { throw SourceEnded() }
            try writeAll(UnsafeRawBufferPointer(rebasing: chunk[0..<n]), at: start + done)
            done += Int64(n)
        }
    }

    /// Through `buffer` into `direct` (this file reopened with O_DIRECT), so the copy takes
    /// no page cache (fresh page-cache pages for a big file cost more system time than the
    /// direct write, and vary widely from run to run). `start` and the
    /// buffer must be 4 KiB-aligned; the last partial block goes through this descriptor.
    /// Throws `DirectRefused` when the file system turns a direct write down.
    public func copyRangeDirect(from source: OpenFile, at offset: Int64, count: Int64, to start: Int64,
                                direct: OpenFile, buffer: UnsafeMutableRawBufferPointer) throws {
        var done: Int64 = 0
        while done < count {
            let chunk = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<Int(min(Int64(buffer.count), count - done))])
            let n = try source.read(into: chunk, at: offset + done)
            guard n > 0 else { throw SourceEnded() }
            let aligned = n & ~(Self.directAlignment - 1)
            if aligned > 0 {
                var written = 0
                let error = failure { written = pwrite(direct.fd, chunk.baseAddress, aligned, off_t(start + done)); return written }
                if error == EINVAL { throw DirectRefused() }
                if let error { throw SystemError("write", path, errno: error) }
                if written == 0 { throw SystemError("write", path, errno: EIO) }
                done += Int64(written)
                if written < aligned { continue }
            }
            if aligned < n {
                try writeAll(UnsafeRawBufferPointer(rebasing: chunk[aligned..<n]), at: start + done)
                done += Int64(n - aligned)
            }
        }
    }

    /// Offsets, lengths and buffers of O_DIRECT I/O are multiples of this.
    public static let directAlignment = 4096

    /// The file system does not take direct writes at this offset or of this buffer.
    public struct DirectRefused: Error {}
}
