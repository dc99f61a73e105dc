import FileIO

/// Builds the `ChunkSums` of a file from its bytes in order, as they are written.
public struct ChunkSummer: Sendable {
    private var sums: [UInt64] = []
    private var crc: UInt64 = 0
    /// Bytes of the current chunk so far.
    private var filled = 0
    public private(set) var size: Int64 = 0

    public init() {}

    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        var rest = bytes
        while !rest.isEmpty {
            let n = min(ChunkSums.chunkSize - filled, rest.count)
            crc = ChunkSums.checksum(UnsafeRawBufferPointer(rebasing: rest[rest.startIndex..<rest.startIndex + n]), continuing: crc)
            advance(n)
            rest = UnsafeRawBufferPointer(rebasing: rest[(rest.startIndex + n)...])
        }
    }

    /// `count` zero bytes: a hole the file keeps where bytes are stored elsewhere. Whole
    /// chunks of zeros cost nothing (their sum is known).
    public mutating func skip(_ count: Int64) {
        var rest = count
        while rest > 0 {
            if filled == 0, rest >= Int64(ChunkSums.chunkSize) {
                sums.append(Zeros.chunkSum)
                size += Int64(ChunkSums.chunkSize)
                rest -= Int64(ChunkSums.chunkSize)
                continue
            }
            let n = Int(min(Int64(ChunkSums.chunkSize - filled), rest))
            crc = Zeros.checksum(count: n, continuing: crc)
            advance(n)
            rest -= Int64(n)
        }
    }

    private mutating func advance(_ n: Int) {
        filled += n
        size += Int64(n)
        if filled == ChunkSums.chunkSize {
            sums.append(crc)
            crc = 0
            filled = 0
        }
    }

    public func finish() -> ChunkSums {
        ChunkSums(size: size, sums: filled > 0 ? sums + [crc] : sums)
    }
}

/// A chunk's worth of zeros, for the holes a split layer tar keeps.
enum Zeros {
    nonisolated(unsafe) static let buffer: UnsafeRawBufferPointer = {
        let zeros = UnsafeMutableRawBufferPointer.allocate(byteCount: ChunkSums.chunkSize, alignment: 64)
        zeros.initializeMemory(as: UInt8.self, repeating: 0)
        return UnsafeRawBufferPointer(zeros)
    }()

    static let chunkSum = ChunkSums.checksum(buffer)

    static func checksum(count: Int, continuing crc: UInt64) -> UInt64 {
        ChunkSums.checksum(UnsafeRawBufferPointer(rebasing: buffer[0..<count]), continuing: crc)
    }
}

extension ChunkSummer {
    /// The sums of a file as it is now, read whole: for a file whose bytes changed after they
    /// streamed in (a tar the splitter's output was put back into), or one stored by an
    /// imgvol that kept no sums, once its digest has been checked.
    public static func sums(of file: OpenFile) throws(SystemError) -> ChunkSums {
        var summer = ChunkSummer()
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 4 << 20, alignment: 4096)
        defer { buffer.deallocate() }
        var offset: Int64 = 0
        while true {
            let n = try file.read(into: buffer, at: offset)
            if n == 0 { break }
            summer.update(UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
            offset += Int64(n)
        }
        return summer.finish()
    }
}
