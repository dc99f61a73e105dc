import FileIO
import Foundation
import Testing
import TestSupport

@Suite("BackgroundFileWriter")
struct BackgroundFileWriterTests {
    /// Odd-sized writes across several 4 MiB blocks and an unaligned tail read back intact.
    @Test(arguments: [0, 1, 4 << 20, (9 << 20) + 123])
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
