/// Where a `TarSplitter` sends a layer tar's bytes.
public protocol TarSplitterOutput: AnyObject {
    /// Bytes that stay in the tar.
    func tar(_ bytes: UnsafeRawBufferPointer) throws
    /// `count` bytes that are stored apart: the tar keeps a hole of that length, so every
    /// offset in it stays the offset in the layer.
    func tarHole(_ count: Int64) throws
    /// A regular file's content starts at `offset` in the tar and goes to a file of its own.
    func beginFile(at offset: Int64, size: Int64) throws
    func file(_ bytes: UnsafeRawBufferPointer) throws
    func endFile() throws
}

/// Splits a layer tar, as it streams in, into the tar and one file per big regular file, so
/// that each big file's bytes are a whole file in the store: the FUSE server can then hand
/// that file to the kernel (passthrough) and a read through the mount runs at native speed.
/// Small files stay in the tar, where they cost no inode each.
///
/// Only what it understands is split: ustar/GNU headers with octal or base-256 sizes, pax
/// `size` records, GNU long names. Anything else (pax global headers, sparse files, a bad
/// checksum) and it passes the rest through untouched. Its reading is checked afterwards
/// against libarchive's index of the same tar (see `LayerSplit`).
public final class TarSplitter {
    /// Regular files of at least this size are stored apart.
    public static let threshold: Int64 = 1 << 20
    /// Larger pax headers are not parsed (the rest passes through).
    static let paxLimit: Int64 = 1 << 20

    private enum Destination { case tar, file, pax }
    private enum State {
        case header
        case data(remaining: Int64, padding: Int64, to: Destination)
        case padding(remaining: Int64)
        case passthrough
    }

    private let output: any TarSplitterOutput
    private let threshold: Int64
    private var state = State.header
    private var header: [UInt8] = []
    private var pax: [UInt8] = []
    private var paxSize: Int64?
    /// Bytes consumed so far: the offset in the tar of the next byte.
    public private(set) var position: Int64 = 0

    public init(output: any TarSplitterOutput, threshold: Int64 = TarSplitter.threshold) {
        self.output = output
        self.threshold = threshold
        header.reserveCapacity(512)
    }

    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        var rest = bytes
        while !rest.isEmpty {
            switch state {
            case .passthrough:
                try output.tar(rest)
                position += Int64(rest.count)
                return
            case .header:
                let n = min(512 - header.count, rest.count)
                header.append(contentsOf: rest[rest.startIndex..<rest.startIndex + n])
                try consume(&rest, n, to: .tar)
                if header.count == 512 {
                    state = parseHeader()
                    header.removeAll(keepingCapacity: true)
                }
            case .data(let remaining, let padding, let destination):
                let n = Int(min(remaining, Int64(rest.count)))
                if destination == .pax { pax.append(contentsOf: rest[rest.startIndex..<rest.startIndex + n]) }
                try consume(&rest, n, to: destination)
                if remaining - Int64(n) > 0 {
                    state = .data(remaining: remaining - Int64(n), padding: padding, to: destination)
                } else {
                    if destination == .file { try output.endFile() }
                    state = padding > 0 ? .padding(remaining: padding) : .header
                    if destination == .pax, !parsePax() { state = .passthrough }
                }
            case .padding(let remaining):
                let n = Int(min(remaining, Int64(rest.count)))
                try consume(&rest, n, to: .tar)
                state = remaining - Int64(n) > 0 ? .padding(remaining: remaining - Int64(n)) : .header
            }
        }
    }

    private func consume(_ rest: inout UnsafeRawBufferPointer, _ n: Int, to destination: Destination) throws {
        let part = UnsafeRawBufferPointer(rebasing: rest[rest.startIndex..<rest.startIndex + n])
        if destination == .file {
            try output.file(part)
            try output.tarHole(Int64(n))
        } else {
            try output.tar(part)
        }
        position += Int64(n)
        rest = UnsafeRawBufferPointer(rebasing: rest[(rest.startIndex + n)...])
    }

    /// What follows the header just read.
    private func parseHeader() -> State {
        // End of archive, or a header this does not trust: the rest goes to the tar as it is.
        guard header.contains(where: { $0 != 0 }), checksumMatches(), let size = Self.number(header[124..<136]) else {
            return .passthrough
        }
        let type = header[156]
        switch type {
        case UInt8(ascii: "x"):
            guard size <= Self.paxLimit else { return .passthrough }
            pax.removeAll(keepingCapacity: true)
            return data(size, to: .pax)
        case UInt8(ascii: "g"), UInt8(ascii: "S"), UInt8(ascii: "M"):
            return .passthrough
        default:
            let dataSize = paxSize ?? size
            paxSize = nil
            let regular = type == 0 || type == UInt8(ascii: "0") || type == UInt8(ascii: "7")
            if regular, dataSize >= threshold {
                do { try output.beginFile(at: position, size: dataSize) } catch { return .passthrough }
                return data(dataSize, to: .file)
            }
            return data(dataSize, to: .tar)
        }
    }

    private func data(_ size: Int64, to destination: Destination) -> State {
        let padding = (512 - size % 512) % 512
        if size == 0 { return padding > 0 ? .padding(remaining: padding) : .header }
        return .data(remaining: size, padding: padding, to: destination)
    }

    /// The sum of the header's bytes with the checksum field counted as spaces.
    private func checksumMatches() -> Bool {
        guard let stored = Self.number(header[148..<156]) else { return false }
        let sum = header.withUnsafeBufferPointer { bytes in
            bytes.reduce(0) { $0 + Int64($1) } - bytes[148..<156].reduce(0) { $0 + Int64($1) } + 8 * 32
        }
        return sum == stored
    }

    /// A numeric header field: octal digits (space or NUL padded), or base-256 when the first
    /// byte's high bit is set. nil for a negative or unreadable value.
    static func number(_ field: ArraySlice<UInt8>) -> Int64? {
        guard let first = field.first else { return nil }
        if first & 0x80 != 0 {
            guard first & 0x40 == 0 else { return nil }
            var value = Int64(first & 0x3f)
            for byte in field.dropFirst() {
                guard value < (Int64.max >> 8) else { return nil }
                value = value << 8 | Int64(byte)
            }
            return value
        }
        var value: Int64 = 0
        var digits = field.drop(while: { $0 == 32 || $0 == 0 })
        while let byte = digits.first, byte >= 48, byte <= 55 {
            guard value < (Int64.max >> 3) else { return nil }
            value = value << 3 | Int64(byte - 48)
            digits = digits.dropFirst()
        }
        return digits.allSatisfy({ $0 == 32 || $0 == 0 }) ? value : nil
    }

    /// Reads a pax header's records ("LEN key=value\n"): `size` applies to the next entry.
    /// false when the rest must pass through (sparse files, or records it cannot read).
    private func parsePax() -> Bool {
        var i = 0
        while i < pax.count, pax[i] != 0 {
            var length = 0
            var j = i
            while j < pax.count, pax[j] >= 48, pax[j] <= 57 {
                length = length * 10 + Int(pax[j] - 48)
                j += 1
                guard length <= pax.count else { return false }
            }
            guard j < pax.count, pax[j] == 32, length > 0, i + length <= pax.count, pax[i + length - 1] == 10 else { return false }
            let record = pax[(j + 1)..<(i + length - 1)]
            guard let equals = record.firstIndex(of: UInt8(ascii: "=")) else { return false }
            let key = String(decoding: record[record.startIndex..<equals], as: UTF8.self)
            let value = String(decoding: record[(equals + 1)...], as: UTF8.self)
            if key == "size" {
                guard let size = Int64(value), size >= 0 else { return false }
                paxSize = size
            } else if key.hasPrefix("GNU.sparse") {
                return false
            }
            i += length
        }
        return true
    }
}
