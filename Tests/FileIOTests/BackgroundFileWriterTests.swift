import FileIO
import Foundation
import Testing
import TestSupport

@Suite("BackgroundFileWriter")
struct BackgroundFileWriterTests {
    /// Odd-sized writes across several blocks (1 MiB ones, then 4 MiB ones past 64 MiB) and
    /// an unaligned tail read back intact.
    @Test(arguments: [0, 1, 4 << 20, (9 << 20) + 123, (70 << 20) + 4097])
    func writesWhatItIsGiven(size: Int) throws {
        try withTempDir { dir in
            let bytes = pseudoRandomBytes(size, seed: UInt64(size) + 1)
            let writer = try BackgroundFileWriter(path: dir + "/out")
            var offset = 0
            var chunk = 1
            while offset < bytes.count {
                let end = min(bytes.count, offset + chunk)
                try bytes[offset..<end].withUnsafeBytes { try writer.write($0) }
                offset = end
                chunk = chunk * 3 % 700_001 + 1
            }
            try writer.finish()
            #expect(writer.written == Int64(size))
            #expect(try readFile(dir + "/out") == bytes)
        }
    }

    /// Holes (skipped ranges) between writes, on both sides of the switch to larger blocks.
    @Test func leavesHolesWhereSkipped() throws {
        try withTempDir { dir in
            let writer = try BackgroundFileWriter(path: dir + "/out")
            var expected: [UInt8] = []
            for (n, (size, hole)) in [(1_500_000, 300_000), ((63 << 20) - 7, 5 << 20), (9 << 20, 4096), (33, 0)].enumerated() {
                let bytes = pseudoRandomBytes(size, seed: UInt64(n) + 7)
                try bytes.withUnsafeBytes { try writer.write($0) }
                try writer.skip(Int64(hole))
                expected += bytes + [UInt8](repeating: 0, count: hole)
            }
            try writer.finish()
            #expect(writer.written == Int64(expected.count))
            #expect(try readFile(dir + "/out") == expected)
        }
    }

    @Test func truncatesAnExistingFile() throws {
        try withTempDir { dir in
            try writeFile([UInt8](repeating: 7, count: 10_000), to: dir + "/out")
            let writer = try BackgroundFileWriter(path: dir + "/out")
            try [UInt8]([1, 2, 3]).withUnsafeBytes { try writer.write($0) }
            try writer.finish()
            #expect(try readFile(dir + "/out") == [1, 2, 3])
        }
    }
}
