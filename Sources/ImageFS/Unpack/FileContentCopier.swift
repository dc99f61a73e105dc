import FileIO
import Foundation
import Integrity
import Layers
import Store
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Copies regular files' bytes out of the layer tars (or the files stored apart beside them)
/// into files `unpack` has just created, each range checked against its chunk sums first.
/// Unchecked: one per writer thread, which alone uses it and its buffer; there is no lock.
final class FileContentCopier: @unchecked Sendable {
    /// Files smaller than this are copied with pread/write through a buffer: for them,
    /// copy_file_range's in-kernel splice setup costs more than the copy.
    static let bufferSize = 1 << 20
    /// Files this large are copied in `pieces` concurrent parts.
    static let pieceThreshold: Int64 = 64 << 20
    static let pieces = 4
    /// Files this large are written around the page cache.
    static let directThreshold: Int64 = 64 << 20
    static let directBufferSize = 4 << 20

    private let sources: [LayerData]
    private let verifiers: [ChunkVerifier?]
    private let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: bufferSize, alignment: 4096)

    init(sources: [LayerData], verifiers: [ChunkVerifier?]) {
        self.sources = sources
        self.verifiers = verifiers
    }

    deinit { buffer.deallocate() }

    /// Fills `target` (just created, empty) with the bytes of `node`.
    func fill(_ target: OpenFile, with node: ImageTree.Inode) throws {
        guard node.size > 0 else { return }
        let layer = sources[Int(node.layer)]
        // A file stored apart (`LayerSplit`) is its own source, from offset 0.
        let apart = node.storedApart ? try layer.openApartVerified(offset: node.dataOffset) : nil
        defer { apart?.0.close() }
        let source = apart?.0 ?? layer.file
        let verifier = apart.map(\.1) ?? verifiers[Int(node.layer)]
        let offset = apart == nil ? node.dataOffset : 0
        if node.size < Self.bufferSize {
            try Self.verify(verifier, offset: offset, count: node.size, for: target)
            do {
                try target.copyRangeByReading(from: source, at: offset, count: node.size, to: 0, buffer: buffer)
            } catch is OpenFile.SourceEnded {
                throw Unpacker.Failure(path: target.path, reason: "layer data ends early")
            }
        } else {
            try copyInPieces(from: source, verifier: verifier, offset: offset, count: node.size, to: target)
        }
    }

    /// Nothing damaged leaves the store: a range with a chunk that does not match its sum
    /// fails the unpack, naming the file.
    private static func verify(_ verifier: ChunkVerifier?, offset: Int64, count: Int64, for target: OpenFile) throws {
        guard let verifier, let (damage, _) = verifier.check(offset: offset, length: Int(count)) else { return }
        throw Unpacker.Failure(path: target.path, reason: "the stored content is damaged (\(damage)); "
            + "run `imgvol check --repair` to fetch it again")
    }

    /// A big file is copied as a few pieces at once: with the layer tar not in the page cache
    /// (pulled long ago, or an uncompressed layer fetched in one stream with O_DIRECT), one
    /// sequential copy waits for each read in turn. From `directThreshold` on, the pieces are
    /// written with O_DIRECT (`OpenFile.copyRangeDirect`).
    private func copyInPieces(from source: OpenFile, verifier: ChunkVerifier?, offset: Int64, count: Int64, to target: OpenFile) throws {
        let pieces = count >= Self.pieceThreshold ? Self.pieces : 1
        let direct = count >= Self.directThreshold ? target.reopenForDirectWrites() : nil
        defer { direct?.close() }
        // Rounded up twice (to a share, then to whole buffers), so the pieces cover every byte
        // and each starts on a buffer boundary (which O_DIRECT needs).
        let share = (count + Int64(pieces) - 1) / Int64(pieces)
        let pieceSize = (share + Int64(Self.bufferSize) - 1) / Int64(Self.bufferSize) * Int64(Self.bufferSize)
        let failure = Mutex<(any Error)?>(nil)
        DispatchQueue.concurrentPerform(iterations: pieces) { piece in
            let start = Int64(piece) * pieceSize
            let length = min(pieceSize, count - start)
            guard length > 0 else { return }
            do {
                try Self.verify(verifier, offset: offset + start, count: length, for: target)
                try Self.copy(from: source, offset: offset + start, count: length, to: target, at: start, direct: direct)
            } catch {
                failure.withLock { if $0 == nil { $0 = error } }
            }
        }
        if let error = failure.withLock({ $0 }) { throw error }
    }

    /// Copies a range, turning a source that ends early into the unpack error that names the
    /// file. A direct copy the file system refuses is done again in full through the cache.
    private static func copy(from source: OpenFile, offset: Int64, count: Int64, to target: OpenFile, at start: Int64,
                             direct: OpenFile?) throws {
        do {
            if let direct {
                let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: directBufferSize, alignment: OpenFile.directAlignment)
                defer { buffer.deallocate() }
                do {
                    try target.copyRangeDirect(from: source, at: offset, count: count, to: start, direct: direct, buffer: buffer)
                    return
                } catch is OpenFile.DirectRefused {}
            }
            try target.copyRange(from: source, at: offset, count: count, to: start, bufferSize: bufferSize)
        } catch is OpenFile.SourceEnded {
            throw Unpacker.Failure(path: target.path, reason: "layer data ends early")
        }
    }
}
