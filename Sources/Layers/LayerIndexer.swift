import CArchive
import FileIO
import OCI
#if canImport(Glibc)
import Glibc
#endif

/// Reads an uncompressed layer tar with libarchive and records every entry with the offset of
/// its content, so files are later served from the tar itself. Content is skipped (seeked over),
/// not read.
public enum LayerIndexer {
    public static func index(tarPath: String, layer: String) throws(LayerError) -> LayerIndex {
        let handle: OpenFile
        let size: Int64
        do {
            handle = try OpenFile.openRead(tarPath)
            size = try handle.size()
        } catch {
            throw LayerError(.io, layer: layer, error.description)
        }
        return try index(source: handle, size: size, layer: layer)
    }

    /// Indexes a tar read through `source`, which may block until bytes are there (a lazy
    /// mount reading the blob over HTTP): only headers are read; file contents are skipped.
    public static func index(source: any PositionalSource, size: Int64, layer: String) throws(LayerError) -> LayerIndex {
        let reader = try ArchiveReader(layer: layer)
        let a = reader.handle
        try reader.check(archive_read_support_format_tar(a), "tar support")
        try reader.check(archive_read_support_format_gnutar(a), "gnutar support")
        try reader.check(archive_read_support_format_empty(a), "empty support")
        let box = PositionalBox(source: source, size: size)
        let context = Unmanaged.passUnretained(box).toOpaque()
        try reader.check(archive_read_set_read_callback(a, positionalRead), "read callback")
        try reader.check(archive_read_set_skip_callback(a, positionalSkip), "skip callback")
        try reader.check(archive_read_set_callback_data(a, context), "callback data")
        let opened = archive_read_open1(a)
        if let error = box.error { throw LayerError(.io, layer: layer, "\(error)") }
        try reader.check(opened, "opening")

        var entries: [LayerEntry] = []
        var entry: OpaquePointer?
        while true {
            let status = archive_read_next_header(a, &entry)
            if let error = box.error { throw LayerError(.io, layer: layer, "\(error)") }
            if status == ARCHIVE_EOF { break }
            if status == ARCHIVE_FATAL, endsAfterLastFile(entries, source: source, size: size) {
                // Some writers (umoci 0.4 `insert`) omit the last file's padding and the
                // end-of-archive blocks; every byte of every file is there, and podman accepts
                // such layers, so imgvol does too.
                break
            }
            try reader.check(status, "reading entry \(entries.count + 1)")
            guard let entry else { break }
            if let parsed = try parse(entry, dataOffset: archive_filter_bytes(a, 0), layer: layer) {
                entries.append(parsed)
            }
        }
        withExtendedLifetime(box) {}
        return LayerIndex(entries: entries)
    }

    /// True when the tar ends inside the padding after the last file's content: nothing but
    /// zero padding and the end-of-archive marker are missing.
    static func endsAfterLastFile(_ entries: [LayerEntry], source: any PositionalSource, size: Int64) -> Bool {
        guard let last = entries.last, last.kind == .regular else { return false }
        let end = last.dataOffset + last.size
        guard size >= end, size - end < 512 else { return false }
        var tail = [UInt8](repeating: 0, count: Int(size - end))
        let read = tail.withUnsafeMutableBytes { b in Result { try source.read(into: b, at: end) } }
        guard case .success(let n) = read else { return false }
        return n == tail.count && tail.allSatisfy { $0 == 0 }
    }

    static func parse(_ e: OpaquePointer, dataOffset: Int64, layer: String) throws(LayerError) -> LayerEntry? {
        let rawPath = archive_entry_pathname(e).map { String(cString: $0) } ?? ""
        let path: String
        do { path = try TarPath.normalize(rawPath) } catch {
            throw LayerError(.unsafeEntry, layer: layer, "\"\(rawPath)\" climbs above the image root with \"..\"")
        }
        var result = LayerEntry(
            path: path, kind: .regular,
            mode: UInt32(archive_entry_perm(e)) & 0o7777,
            uid: UInt32(truncatingIfNeeded: archive_entry_uid(e)),
            gid: UInt32(truncatingIfNeeded: archive_entry_gid(e)),
            mtimeSeconds: Int64(archive_entry_mtime(e)),
            mtimeNanoseconds: UInt32(truncatingIfNeeded: archive_entry_mtime_nsec(e)))

        let base = TarPath.base(path)
        if base.utf8.starts(with: TarPath.whiteoutPrefix.utf8) {
            let parent = TarPath.parent(path)
            if base.utf8.elementsEqual(TarPath.opaqueMarker.utf8) {
                result.kind = .opaque
                result.path = parent
            } else {
                let hidden = Substring(base.utf8.dropFirst(TarPath.whiteoutPrefix.utf8.count))
                guard !hidden.isEmpty, !PathComponents.isCurrent(hidden), !PathComponents.isParent(hidden) else {
                    throw LayerError(.unsafeEntry, layer: layer, "whiteout \"\(rawPath)\" names no file")
                }
                result.kind = .whiteout
                result.path = parent.isEmpty ? String(hidden) : parent + "/" + hidden
            }
            return result
        }

        if let hardlink = archive_entry_hardlink(e) {
            let rawTarget = String(cString: hardlink)
            do { result.linkTarget = try TarPath.normalize(rawTarget) } catch {
                throw LayerError(.unsafeEntry, layer: layer, "hardlink \"\(rawPath)\" points above the image root (\"\(rawTarget)\")")
            }
            guard !result.linkTarget.isEmpty else {
                throw LayerError(.unsafeEntry, layer: layer, "hardlink \"\(rawPath)\" points at the image root")
            }
            result.kind = .hardlink
            return result
        }

        guard !path.isEmpty || UInt32(archive_entry_filetype(e)) == FileType.directory else {
            throw LayerError(.unsafeEntry, layer: layer, "\"\(rawPath)\" names the image root but is not a directory")
        }

        switch UInt32(archive_entry_filetype(e)) {
        case FileType.regular:
            guard archive_entry_sparse_count(e) == 0 else {
                throw LayerError(.unsupportedEntry, layer: layer, "\"\(rawPath)\" is a sparse file; re-create the layer without sparse entries")
            }
            result.kind = .regular
            result.size = Int64(archive_entry_size(e))
            result.dataOffset = dataOffset
        case FileType.directory:
            result.kind = .directory
        case FileType.symlink:
            result.kind = .symlink
            result.linkTarget = archive_entry_symlink(e).map { String(cString: $0) } ?? ""
            result.size = Int64(result.linkTarget.utf8.count)
        case FileType.fifo:
            result.kind = .fifo
        case FileType.charDevice, FileType.blockDevice:
            result.kind = UInt32(archive_entry_filetype(e)) == FileType.charDevice ? .charDevice : .blockDevice
            result.deviceMajor = UInt32(truncatingIfNeeded: archive_entry_rdevmajor(e))
            result.deviceMinor = UInt32(truncatingIfNeeded: archive_entry_rdevminor(e))
        case FileType.socket:
            result.kind = .socket
        default:
            throw LayerError(.unsupportedEntry, layer: layer, "\"\(rawPath)\" has unknown type \(UInt32(archive_entry_filetype(e)))")
        }
        result.xattrs = xattrs(of: e)
        return result
    }

    static func xattrs(of e: OpaquePointer) -> [Xattr] {
        guard archive_entry_xattr_reset(e) > 0 else { return [] }
        var result: [Xattr] = []
        var name: UnsafePointer<CChar>?
        var value: UnsafeRawPointer?
        var size = 0
        while archive_entry_xattr_next(e, &name, &value, &size) == ARCHIVE_OK {
            guard let name else { continue }
            let bytes = value.map { Array(UnsafeRawBufferPointer(start: $0, count: size)) } ?? []
            result.append(Xattr(name: String(cString: name), value: bytes))
        }
        return result.sorted { $0.name < $1.name }
    }
}

/// libarchive's AE_IF* values (C macros with casts, which Swift does not import).
enum FileType {
    static let regular: UInt32 = 0o100000
    static let directory: UInt32 = 0o040000
    static let symlink: UInt32 = 0o120000
    static let fifo: UInt32 = 0o010000
    static let charDevice: UInt32 = 0o020000
    static let blockDevice: UInt32 = 0o060000
    static let socket: UInt32 = 0o140000
}

/// libarchive's view of a `PositionalSource`: a cursor, a buffer, and the first error.
private final class PositionalBox {
    let source: any PositionalSource
    let size: Int64
    let buffer: UnsafeMutableRawBufferPointer
    var position: Int64 = 0
    var error: (any Error)?

    init(source: any PositionalSource, size: Int64) {
        self.source = source
        self.size = size
        buffer = .allocate(byteCount: 1 << 16, alignment: 64)
    }

    deinit { buffer.deallocate() }
}

private func positionalRead(_ archive: OpaquePointer?, _ context: UnsafeMutableRawPointer?,
                            _ out: UnsafeMutablePointer<UnsafeRawPointer?>?) -> la_ssize_t {
    guard let context else { return -1 }
    let box = Unmanaged<PositionalBox>.fromOpaque(context).takeUnretainedValue()
    let want = Int(min(Int64(box.buffer.count), max(0, box.size - box.position)))
    guard want > 0 else { return 0 }
    do {
        let n = try box.source.read(into: UnsafeMutableRawBufferPointer(rebasing: box.buffer[0..<want]), at: box.position)
        box.position += Int64(n)
        out?.pointee = UnsafeRawPointer(box.buffer.baseAddress)
        return la_ssize_t(n)
    } catch {
        box.error = error
        return -1
    }
}

/// Skipping content is just moving the cursor: a lazy source never fetches what is skipped.
private func positionalSkip(_ archive: OpaquePointer?, _ context: UnsafeMutableRawPointer?, _ request: la_int64_t) -> la_int64_t {
    guard let context else { return 0 }
    let box = Unmanaged<PositionalBox>.fromOpaque(context).takeUnretainedValue()
    let step = min(Int64(request), max(0, box.size - box.position))
    box.position += step
    return la_int64_t(step)
}
