import FileIO

/// Base for this module's `ByteSource`s (a class, since libarchive holds it by reference).
public class ByteSourceAdapter: ByteSource {
    public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int { 0 }
    public func borrow(upTo count: Int) throws -> UnsafeRawBufferPointer? { nil }
}

/// Reads a finished file from the start.
public final class FileByteSource: ByteSourceAdapter {
    private let handle: OpenFile
    private var offset: Int64 = 0

    public init(path: String) throws {
        handle = try OpenFile.openRead(path)
    }

    override public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        let n = try handle.read(into: buffer, at: offset)
        offset += Int64(n)
        return n
    }
}
