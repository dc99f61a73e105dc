import FileIO

/// Indexes a layer tar while it is being decompressed into its file, reading behind the
/// writer, so that the index is ready when the tar is instead of being read back afterwards.
///
/// Best effort: whatever goes wrong (the decompression fails, or the tar is one that only
/// the complete file can be indexed, such as one without its end-of-archive blocks) gives
/// nil, and the caller indexes the finished file as before.
public final class FollowingIndexer: Sendable {
    private enum Progress { case running, done(LayerIndex?) }

    private let writer: BackgroundFileWriter
    private let progress = Monitor(Progress.running)

    /// Starts following `writer`'s file at `path` on a blocking thread.
    public init(writer: BackgroundFileWriter, path: String, layer: String) {
        self.writer = writer
        let progress = self.progress
        do {
            try BlockingThreads.start {
                var index: LayerIndex?
                if let file = try? OpenFile.openRead(path) {
                    // The size is not known until the writer is done: the source ends the stream.
                    index = try? LayerIndexer.index(source: WrittenFile(writer: writer, file: file), size: .max, layer: layer)
                }
                progress.update { $0 = .done(index) }
            }
        } catch {
            progress.update { $0 = .done(nil) }
        }
    }

    /// Waits for the indexer; call after the writer has finished or failed. nil unless the
    /// writer finished: what an abandoned writer left may parse as a shorter, valid tar.
    public func join() -> LayerIndex? {
        let index = progress.wait(wake: .none) { progress -> LayerIndex?? in
            guard case .done(let index) = progress else { return nil }
            return .some(index)
        }
        return writer.finished ? index : nil
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
