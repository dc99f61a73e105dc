import CArchive

/// Owns one libarchive read handle. Every libarchive status goes through `check`, which attaches
/// libarchive's own message.
final class ArchiveReader {
    let handle: OpaquePointer
    let layer: String

    init(layer: String) throws(LayerError) {
        guard let handle = archive_read_new() else {
            throw LayerError(.io, layer: layer, "libarchive could not allocate a reader")
        }
        self.handle = handle
        self.layer = layer
    }

    deinit { archive_read_free(handle) }

    var errorMessage: String {
        archive_error_string(handle).map { String(cString: $0) } ?? "unknown libarchive error"
    }

    @discardableResult
    func check(_ status: Int32, _ what: String) throws(LayerError) -> Int32 {
        if status == ARCHIVE_OK || status == ARCHIVE_EOF { return status }
        if status == ARCHIVE_WARN { return status }
        throw LayerError(.malformed, layer: layer, "\(what): \(errorMessage)")
    }
}
