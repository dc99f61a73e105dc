import CISAL

/// A checksum of every fixed-size chunk of one stored file, recorded while its verified bytes
/// streamed into the store, so that a mount checks each chunk before it first serves a byte of
/// it (a flipped bit on disk, a file another tool rewrote, a torn write).
///
/// CRC-64 (ISA-L, folded with PCLMUL): the bytes were already proven by their sha256 digest
/// on the way in; what is left to catch is damage at rest, which a 64-bit CRC catches short of
/// a 2^-64 chance, at several times sha256's speed (see docs/performance.md).
public struct ChunkSums: Sendable, Equatable {
    /// Small enough that a read of one small file checks little more than itself; large
    /// enough that the table of a 100 GiB model stays a few MiB.
    public static let chunkSize = 256 << 10

    /// The file's size: a file that is shorter or longer is damaged as a whole.
    public let size: Int64
    public let sums: [UInt64]

    public init(size: Int64, sums: [UInt64]) {
        self.size = size
        self.sums = sums
    }

    /// Chunks a file of `size` bytes has (the last one may be short).
    public static func chunkCount(size: Int64) -> Int {
        Int((size + Int64(chunkSize) - 1) / Int64(chunkSize))
    }

    /// The byte range of chunk `number`.
    public func range(of number: Int) -> (start: Int64, length: Int) {
        let start = Int64(number) * Int64(Self.chunkSize)
        return (start, Int(min(Int64(Self.chunkSize), size - start)))
    }

    /// Whether `bytes` are chunk `number`.
    public func matches(_ number: Int, _ bytes: UnsafeRawBufferPointer) -> Bool {
        number < sums.count && range(of: number).length == bytes.count && Self.checksum(bytes) == sums[number]
    }

    public static func checksum(_ bytes: UnsafeRawBufferPointer, continuing crc: UInt64 = 0) -> UInt64 {
        guard let base = bytes.baseAddress, !bytes.isEmpty else { return crc }
        return crc64_ecma_refl(crc, base.assumingMemoryBound(to: UInt8.self), UInt64(bytes.count))
    }
}
