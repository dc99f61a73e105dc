import FileIO
import CArchive
import OCI
#if canImport(Glibc)
import Glibc
#endif

/// Streams a compressed layer through ISA-L (gzip) or libarchive's zstd filter and hands the
/// uncompressed tar bytes to `sink` in order. Runs synchronously: callers put it on its own
/// thread so it overlaps with the download it reads from.
public enum LayerDecompressor {
    public static func run(layer: String, compression: LayerCompression, source: any ByteSource,
                           sink: (UnsafeRawBufferPointer) throws -> Void) throws {
        let filter: (OpaquePointer?) -> Int32
        switch compression {
        case .gzip:
            try GzipInflater(layer: layer).run(source: source, sink: sink)
            return
        case .zstd: filter = archive_read_support_filter_zstd
        case .none: filter = archive_read_support_filter_none
        }
        let reader = try ArchiveReader(layer: layer)
        let a = reader.handle
        try reader.check(filter(a), "\(compression.rawValue) support")
        try reader.check(archive_read_support_format_raw(a), "raw format")
        try reader.check(archive_read_support_format_empty(a), "empty format")

        let box = SourceBox(source: source)
        let context = Unmanaged.passUnretained(box).toOpaque()
        let status = archive_read_open(a, context, nil, sourceRead, nil)
        if let error = box.error { throw error }
        try reader.check(status, "opening the \(compression.rawValue) stream")

        var entry: OpaquePointer?
        let header = archive_read_next_header(a, &entry)
        if let error = box.error { throw error }
        if header == ARCHIVE_EOF { return }
        try reader.check(header, "reading the \(compression.rawValue) stream")

        var block: UnsafeRawPointer?
        var size = 0
        var offset: la_int64_t = 0
        while true {
            let r = archive_read_data_block(a, &block, &size, &offset)
            if let error = box.error { throw error }
            if r == ARCHIVE_EOF { break }
            try reader.check(r, "decompressing (\(compression.rawValue))")
            if let block, size > 0 { try sink(UnsafeRawBufferPointer(start: block, count: size)) }
        }
        // A stream with bytes after its end (or a truncated one) is an error, not a success.
        if let error = box.error { throw error }
    }
}

/// Keeps the source and the read buffer alive for libarchive's C callback.
private final class SourceBox {
    let source: any ByteSource
    let buffer: UnsafeMutableRawBufferPointer
    var error: (any Error)?

    init(source: any ByteSource) {
        self.source = source
        self.buffer = .allocate(byteCount: 1 << 20, alignment: 64)
    }

    deinit { buffer.deallocate() }
}

private func sourceRead(_ archive: OpaquePointer?, _ context: UnsafeMutableRawPointer?,
                        _ out: UnsafeMutablePointer<UnsafeRawPointer?>?) -> la_ssize_t {
    guard let context else { return -1 }
    let box = Unmanaged<SourceBox>.fromOpaque(context).takeUnretainedValue()
    do {
        let n = try box.source.read(into: box.buffer)
        out?.pointee = UnsafeRawPointer(box.buffer.baseAddress)
        return la_ssize_t(n)
    } catch {
        box.error = error
        return -1
    }
}
