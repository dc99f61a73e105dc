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
            let n = imgvol_copy_file_range(source.fd, offset + done, fd, start + done, Int(min(count - done, 1 << 30)))
            if n > 0 { done += n; continue }
            if n == 0 { throw SourceEnded() }
            if errno == EINTR { continue }
            if errno == EXDEV || errno == ENOSYS || errno == EINVAL || errno == EOPNOTSUPP {
                let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: bufferSize, alignment: 4096)
                defer { buffer.deallocate() }
                try copyRangeByReading(from: source, at: offset + done, count: count - done, to: start + done, buffer: buffer)
                return
            }
            throw SystemError("copy_file_range", path)
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
}
