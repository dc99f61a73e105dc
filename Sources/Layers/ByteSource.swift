/// Where compressed layer bytes come from: a file still being downloaded, or a finished one.
public protocol ByteSource: AnyObject {
    /// Fills up to `buffer.count` bytes; 0 means the end. Blocks until bytes are there.
    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int
}
