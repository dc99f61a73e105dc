import FileIO
import Integrity
#if canImport(Glibc)
import Glibc
#endif

/// Where a split layer's big files are (see `LayerSplit`): one directory, each file named by
/// where its content starts in the tar. The store says which directory; this says the names.
public struct ApartFiles: Sendable, Equatable {
    public let directory: String

    public init(directory: String) { self.directory = directory }

    public func path(offset: Int64) -> String { "\(directory)/\(offset)" }

    public var exists: Bool { FileSystem.isDirectory(directory) }
}

/// A layer stored split: its tar holds headers and small files, with a hole where each big
/// regular file's bytes were, and `ApartFiles` holds those bytes, one file per entry, named
/// by where its content starts in the tar. Offsets in the tar stay the offsets in
/// the layer, so the index, the digest checks and everything that reads small files are the
/// same as for a whole tar.
public enum LayerSplit {
    /// Marks the entries whose bytes are stored apart: a regular file of at least the split
    /// threshold whose file exists with its size. Run on every index before it is committed,
    /// so the mark never depends on how the index was made.
    public static func markApart(_ index: inout LayerIndex, files: ApartFiles) {
        guard files.exists else { return }
        for i in index.entries.indices where index.entries[i].kind == .regular && index.entries[i].size >= TarSplitter.threshold {
            var st = stat()
            let path = files.path(offset: index.entries[i].dataOffset)
            index.entries[i].storedApart = lstat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFREG && Int64(st.st_size) == index.entries[i].size
        }
    }

    /// Puts back into the tar every file the splitter stored apart that libarchive's index of
    /// the same tar does not show as a regular file at that offset with that size. Should the
    /// two ever read a tar differently, the tar is whole again there and nothing is lost.
    /// Returns the offsets of the files put back (their sums, and the tar's, are then stale).
    @discardableResult
    public static func reconcile(_ index: LayerIndex, files: [Int64: Int64], tarPath: String, apart: ApartFiles) throws(SystemError) -> Set<Int64> {
        guard !files.isEmpty else { return [] }
        var confirmed = Set<Int64>()
        for e in index.entries where e.kind == .regular && files[e.dataOffset] == e.size { confirmed.insert(e.dataOffset) }
        let strays = files.filter { !confirmed.contains($0.key) }
        guard !strays.isEmpty else { return [] }
        let tar = try OpenFile(path: tarPath, flags: O_WRONLY, mode: 0)
        for (offset, size) in strays {
            let path = apart.path(offset: offset)
            do {
                try tar.copyRange(from: try OpenFile.openRead(path), at: 0, count: size, to: offset, bufferSize: 1 << 20)
            } catch let error as SystemError {
                throw error
            } catch {
                throw SystemError("read", path, errno: EIO)
            }
            try FileSystem.remove(path)
        }
        try tar.sync()
        return Set(strays.keys)
    }
}

/// Writes a layer tar split (see `LayerSplit`): the tar through `tar`, each big file through
/// a writer of its own in the tar's files directory, created on the first big file. Sums the
/// chunks of each file as it goes (`StoredSums`).
public final class LayerSplitWriter: TarSplitterOutput {
    public let tar: BackgroundFileWriter
    public let apart: ApartFiles
    /// The layer's digest, for errors.
    let layer: String
    private var current: (writer: BackgroundFileWriter, offset: Int64, size: Int64, summer: ChunkSummer)?
    /// The files written whole: offset in the tar → size.
    public private(set) var files: [Int64: Int64] = [:]
    private var tarSummer = ChunkSummer()
    private var apartSums: [Int64: ChunkSums] = [:]

    /// What was written, once finished.
    public var sums: StoredSums { StoredSums(data: tarSummer.finish(), apart: apartSums) }

    public init(tar: BackgroundFileWriter, apart: ApartFiles, layer: String) {
        self.tar = tar
        self.apart = apart
        self.layer = layer
    }

    public func tar(_ bytes: UnsafeRawBufferPointer) throws {
        tarSummer.update(bytes)
        try tar.write(bytes)
    }

    public func tarHole(_ count: Int64) throws {
        tarSummer.skip(count)
        try tar.skip(count)
    }

    public func beginFile(at offset: Int64, size: Int64) throws {
        if files.isEmpty { try FileSystem.makeDirectory(apart.directory, mode: 0o700) }
        current = (try BackgroundFileWriter(path: apart.path(offset: offset)), offset, size, ChunkSummer())
    }

    public func file(_ bytes: UnsafeRawBufferPointer) throws {
        current?.summer.update(bytes)
        try current?.writer.write(bytes)
    }

    /// The file is written before the tar goes on; it is synced with the others at the end.
    public func endFile() throws {
        guard let current else { return }
        try current.writer.finish(sync: false)
        files[current.offset] = current.size
        apartSums[current.offset] = current.summer.finish()
        self.current = nil
    }

    /// Ends the tar and makes the files durable: one syncfs for them all, since an fsync per
    /// file would cost a journal commit each.
    public func finish() throws {
        if let current {
            // The hole in the tar would read as zeros: a truncated layer is an error here.
            current.writer.abandon()
            self.current = nil
            throw LayerError(.malformed, layer: layer, "it ends inside the content of the file at offset \(current.offset) (\(current.size) bytes)")
        }
        try tar.finish()
        if !files.isEmpty { try FileSystem.syncFileSystem(of: apart.directory) }
    }

    public func abandon() {
        current?.writer.abandon()
        current = nil
        tar.abandon()
    }
}
