/// The chunk sums of one stored layer or raw file: its data file (a layer tar, with zeros
/// where its holes are, or a raw blob) and each file a split tar keeps apart, by the offset
/// that names it.
public struct StoredSums: Sendable, Equatable {
    public var data: ChunkSums
    public var apart: [Int64: ChunkSums]

    public init(data: ChunkSums, apart: [Int64: ChunkSums] = [:]) {
        self.data = data
        self.apart = apart
    }
}

/// Why a sums file does not decode.
public struct SumsDecodingError: Error, CustomStringConvertible {
    public let reason: String
    public var description: String { reason }
}

/// The sums file: magic, chunk size, then per file its key (-1 for the data file), size and
/// sums, little-endian; a CRC-64 of all of it last, so a damaged table is told from damaged
/// data.
extension StoredSums {
    static let magic: [UInt8] = Array("IVSUMS1\n".utf8)

    public func encoded() -> [UInt8] {
        var out = Self.magic
        out.reserveCapacity(64 + 8 * (data.sums.count + apart.values.reduce(0) { $0 + $1.sums.count + 3 }))
        Self.put(UInt64(ChunkSums.chunkSize), &out)
        Self.put(UInt64(apart.count + 1), &out)
        for (key, sums) in [(Int64(-1), data)] + apart.sorted(by: { $0.key < $1.key }) {
            Self.put(UInt64(bitPattern: key), &out)
            Self.put(UInt64(bitPattern: sums.size), &out)
            for sum in sums.sums { Self.put(sum, &out) }
        }
        let crc = out.withUnsafeBytes { ChunkSums.checksum($0) }
        Self.put(crc, &out)
        return out
    }

    public init(decoding bytes: [UInt8]) throws(SumsDecodingError) {
        guard bytes.count >= Self.magic.count + 24, bytes.count % 8 == 0, Array(bytes[0..<8]) == Self.magic else {
            throw SumsDecodingError(reason: "not a chunk sums file (\(bytes.count) bytes)")
        }
        let words = bytes.count / 8
        func word(_ i: Int) -> UInt64 {
            var v: UInt64 = 0
            for b in 0..<8 { v |= UInt64(bytes[i * 8 + b]) << (8 * b) }
            return v
        }
        let crc = bytes.withUnsafeBytes { ChunkSums.checksum(UnsafeRawBufferPointer(rebasing: $0[0..<(bytes.count - 8)])) }
        guard crc == word(words - 1) else { throw SumsDecodingError(reason: "its checksum does not match (damaged)") }
        guard word(1) == UInt64(ChunkSums.chunkSize) else {
            throw SumsDecodingError(reason: "chunk size \(word(1)), expected \(ChunkSums.chunkSize)")
        }
        let files = word(2)
        var i = 3
        var data: ChunkSums?
        var apart: [Int64: ChunkSums] = [:]
        for _ in 0..<files {
            guard i + 2 <= words - 1 else { throw SumsDecodingError(reason: "it ends early") }
            let key = Int64(bitPattern: word(i))
            let size = Int64(bitPattern: word(i + 1))
            guard size >= 0, size <= Int64(words) * Int64(ChunkSums.chunkSize) else {
                throw SumsDecodingError(reason: "a file size of \(size) does not fit the table")
            }
            let count = ChunkSums.chunkCount(size: size)
            i += 2
            guard i + count <= words - 1 else { throw SumsDecodingError(reason: "it ends early") }
            let sums = ChunkSums(size: size, sums: (i..<(i + count)).map(word))
            i += count
            if key == -1 { data = sums } else { apart[key] = sums }
        }
        guard let data, i == words - 1 else { throw SumsDecodingError(reason: "no data file, or bytes after the last file") }
        self.init(data: data, apart: apart)
    }

    private static func put(_ v: UInt64, _ out: inout [UInt8]) {
        withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) }
    }
}
