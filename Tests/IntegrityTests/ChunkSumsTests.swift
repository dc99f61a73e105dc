import FileIO
import Foundation
import Integrity
import Testing
import TestSupport

@Suite("Chunk sums")
struct ChunkSumsTests {
    static let chunk = ChunkSums.chunkSize

    /// Sums built from odd-sized pieces and holes equal sums of the same bytes in one piece.
    @Test(arguments: [0, 1, chunk - 1, chunk, chunk + 1, 3 * chunk + 77])
    func piecesAndHolesSumAsOne(size: Int) {
        var bytes = pseudoRandomBytes(size, seed: UInt64(size) + 3)
        // A hole of zeros across the middle (whole chunks of it when the file is big enough).
        let hole = (size / 5)..<(size - size / 7)
        for i in hole { bytes[i] = 0 }
        var whole = ChunkSummer()
        bytes.withUnsafeBytes { whole.update($0) }
        var pieces = ChunkSummer()
        var offset = 0
        var step = 1
        while offset < hole.lowerBound {
            let end = min(hole.lowerBound, offset + step)
            bytes[offset..<end].withUnsafeBytes { pieces.update($0) }
            offset = end
            step = step * 7 % 100_003 + 1
        }
        pieces.skip(Int64(hole.count))
        bytes[hole.upperBound...].withUnsafeBytes { pieces.update($0) }
        #expect(pieces.finish() == whole.finish())
        #expect(whole.finish().sums.count == ChunkSums.chunkCount(size: Int64(size)))
        #expect(whole.finish().size == Int64(size))
    }

    @Test func sumsFileRoundTripsAndRefusesDamage() throws {
        var a = ChunkSummer()
        pseudoRandomBytes(3 * Self.chunk + 5, seed: 9).withUnsafeBytes { a.update($0) }
        var b = ChunkSummer()
        pseudoRandomBytes(Self.chunk, seed: 10).withUnsafeBytes { b.update($0) }
        let sums = StoredSums(data: a.finish(), apart: [1536: b.finish(), 512: ChunkSummer().finish()])
        let bytes = sums.encoded()
        #expect(try StoredSums(decoding: bytes) == sums)
        // Every single flipped bit and every truncation is refused.
        for i in stride(from: 0, to: bytes.count * 8, by: 13) {
            var flipped = bytes
            flipped[i / 8] ^= UInt8(1 << (i % 8))
            #expect(throws: SumsDecodingError.self) { try StoredSums(decoding: flipped) }
        }
        for n in [0, 8, bytes.count - 8, bytes.count - 1] {
            #expect(throws: SumsDecodingError.self) { try StoredSums(decoding: Array(bytes[0..<n])) }
        }
    }

    /// A verifier passes the stored bytes and refuses a flipped bit, a short file and a long
    /// one; a bad chunk stays bad and is reported once; good chunks elsewhere are still served.
    @Test func verifierFindsDamageOnce() throws {
        try withTempDir { dir in
            let bytes = pseudoRandomBytes(4 * Self.chunk + 100, seed: 11)
            var summer = ChunkSummer()
            bytes.withUnsafeBytes { summer.update($0) }
            let sums = summer.finish()
            let path = dir + "/f"
            try Data(bytes).write(to: URL(fileURLWithPath: path))
            let good = ChunkVerifier(file: try OpenFile.openRead(path), sums: sums)
            #expect(!good.isVerified)
            #expect(good.check(offset: 0, length: bytes.count) == nil)
            #expect(good.isVerified)

            var damaged = bytes
            damaged[2 * Self.chunk + 10] ^= 0x20
            try Data(damaged).write(to: URL(fileURLWithPath: path))
            let bad = ChunkVerifier(file: try OpenFile.openRead(path), sums: sums)
            #expect(bad.check(offset: 0, length: Self.chunk) == nil)
            let found = try #require(bad.check(offset: Int64(2 * Self.chunk), length: 4096))
            #expect(found.newly)
            #expect(found.damage.offset == Int64(2 * Self.chunk))
            #expect(bad.check(offset: Int64(2 * Self.chunk) + 100, length: 1)?.newly == false)
            #expect(bad.check(offset: Int64(3 * Self.chunk), length: Self.chunk) == nil)
            #expect(!bad.isVerified)

            for size in [bytes.count - 1, bytes.count + 1] {
                var other = bytes
                other.removeLast(max(0, bytes.count - size))
                if size > bytes.count { other.append(0) }
                try Data(other).write(to: URL(fileURLWithPath: path))
                let wrongSize = ChunkVerifier(file: try OpenFile.openRead(path), sums: sums)
                #expect(wrongSize.check(offset: 0, length: 1) != nil)
            }
        }
    }
}
