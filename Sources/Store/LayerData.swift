#if canImport(Glibc)
import Glibc
#endif
import FileIO
import Layers

/// One layer's bytes as a mount or `unpack` reads them: the open data file (a layer tar, a raw
/// artifact blob, or a lazy mount's blob still arriving) and, for a split tar, its files
/// stored apart. Open already: a lazy mount's blob may be renamed into the store at any
/// moment, and a descriptor outlives the rename where a path would not.
public struct LayerData: Sendable {
    public let file: OpenFile
    public let apart: ApartFiles?

    public init(file: OpenFile, apart: ApartFiles? = nil) {
        self.file = file
        self.apart = apart
    }

    /// The file holding the content that starts at `offset` in the tar.
    public func openApart(offset: Int64) throws(SystemError) -> OpenFile {
        guard let apart else { throw SystemError("open", "\(file.path): no file stored apart at \(offset)", errno: ENOENT) }
        return try OpenFile.openRead(apart.path(offset: offset))
    }
}
