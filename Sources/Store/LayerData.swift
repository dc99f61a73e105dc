#if canImport(Glibc)
import Glibc
#endif
import FileIO
import Integrity
import Layers

/// One layer's bytes as a mount or `unpack` reads them: the open data file (a layer tar, a raw
/// artifact blob, or a lazy mount's blob still arriving) and, for a split tar, its files
/// stored apart. Open already: a lazy mount's blob may be renamed into the store at any
/// moment, and a descriptor outlives the rename where a path would not.
public struct LayerData: Sendable {
    public let file: OpenFile
    public let apart: ApartFiles?
    /// What every chunk read from the store is checked against; nil only for a lazy mount's
    /// blob still arriving, whose bytes its digest checks when the last one lands.
    public let sums: StoredSums?

    public init(file: OpenFile, apart: ApartFiles? = nil, sums: StoredSums?) {
        self.file = file
        self.apart = apart
        self.sums = sums
    }

    /// A checker of the data file's chunks (nil without sums).
    public func verifier() -> ChunkVerifier? {
        sums.map { ChunkVerifier(file: file, sums: $0.data) }
    }

    /// The file stored apart at `offset`, with a checker of its chunks. A file the sums do not
    /// know is damaged as a whole: its checker has an empty table and refuses every read.
    public func openApartVerified(offset: Int64) throws(SystemError) -> (OpenFile, ChunkVerifier?) {
        let file = try openApart(offset: offset)
        guard let sums else { return (file, nil) }
        return (file, ChunkVerifier(file: file, sums: sums.apart[offset] ?? ChunkSums(size: -1, sums: [])))
    }

    /// The file holding the content that starts at `offset` in the tar.
    public func openApart(offset: Int64) throws(SystemError) -> OpenFile {
        guard let apart else { throw SystemError("open", "\(file.path): no file stored apart at \(offset)", errno: ENOENT) }
        return try OpenFile.openRead(apart.path(offset: offset))
    }
}
