/// Where compressed layer bytes come from: a file still being downloaded, or a finished one.
public protocol ByteSource: AnyObject {
    /// Fills up to `buffer.count` bytes; 0 means the end. Blocks until bytes are there.
    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int

    /// The next bytes (at most `count`), consumed and lent from the source's own memory: valid
    /// until the next call on this source. Empty at the end; nil from a source that cannot
    /// lend (then `read` copies). Blocks until bytes are there.
    func borrow(upTo count: Int) throws -> UnsafeRawBufferPointer?
}

extension ByteSource {
    public func borrow(upTo count: Int) throws -> UnsafeRawBufferPointer? { nil }
}

/// Bytes read at any offset: a stored tar, or a blob still arriving chunk by chunk.
public protocol PositionalSource: AnyObject {
    /// Fills up to `buffer.count` bytes at `offset`; fewer only at the end.
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) throws -> Int
}

extension OpenFile: PositionalSource {}
