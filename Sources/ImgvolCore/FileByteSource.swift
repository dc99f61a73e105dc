import FileIO
import Layers

/// Base for `ByteSource`s in this module (a class, since libarchive holds it by reference).
class ByteSourceAdapter: ByteSource {
    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int { 0 }
    func borrow(upTo count: Int) throws -> UnsafeRawBufferPointer? { nil }
}

/// Reads a finished file from the start.
final class FileByteSource: ByteSourceAdapter {
    private let handle: OpenFile
    private var offset: Int64 = 0

    init(path: String) throws {
        handle = try OpenFile.openRead(path)
    }

    override func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        let n = try handle.read(into: buffer, at: offset)
        offset += Int64(n)
        return n
    }
}
