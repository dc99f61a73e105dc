import FileIO
import Foundation
import Layers

/// Indexes a layer tar while it is being decompressed into its file, reading behind the
/// writer, so that the index is ready when the tar is, instead of being read back afterwards
/// (a tenth of a second per layer of 8,000 small files, after the last byte).
///
/// Best effort: whatever goes wrong (the decompression fails, or the tar is one that only
/// the complete file can be indexed, such as one without its end-of-archive blocks) gives
/// nil, and the caller indexes the finished file as before.
final class FollowingIndexer: @unchecked Sendable {
    private let done = DispatchSemaphore(value: 0)
    private let writer: BackgroundFileWriter
    private var result: LayerIndex?

    /// Starts following `writer`'s file at `path` on a thread of its own.
    init(writer: BackgroundFileWriter, path: String, layer: String) {
        self.writer = writer
        let thread = Thread { [self] in
            defer { done.signal() }
            guard let file = try? OpenFile.openRead(path) else { return }
            let source = WrittenFile(writer: writer, file: file)
            // The size is not known until the writer is done: the source ends the stream.
            result = try? LayerIndexer.index(source: source, size: .max, layer: layer)
        }
        thread.name = "imgvol-index"
        thread.stackSize = 1 << 20
        thread.start()
    }

    /// Waits for the indexer; call after the writer has finished or failed. nil unless the
    /// writer finished: what an abandoned writer left may parse as a shorter, valid tar.
    func join() -> LayerIndex? {
        done.wait()
        return writer.finished ? result : nil
    }
}

/// Reads what a `BackgroundFileWriter` has put in its file, waiting for bytes still to come.
private final class WrittenFile: PositionalSource {
    let writer: BackgroundFileWriter
    let file: OpenFile

    init(writer: BackgroundFileWriter, file: OpenFile) {
        self.writer = writer
        self.file = file
    }

    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) throws -> Int {
        let available = writer.waitForBytes(upTo: offset + Int64(buffer.count))
        let count = Int(max(0, min(Int64(buffer.count), available - offset)))
        guard count > 0 else { return 0 }
        return try file.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<count]), at: offset)
    }
}
