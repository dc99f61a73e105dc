import FileIO
import Foundation
import Layers
import Testing
import TestSupport

@Suite("FollowingIndexer")
struct FollowingIndexerTests {
    /// A tar written through a BackgroundFileWriter in small pieces (as a decompressor does) and
    /// indexed while it is written gives exactly the index of the finished file.
    @Test func indexesWhatTheWriterWritesAsTheFinishedFileWould() throws {
        try withTempDir { dir in
            let source = dir + "/source.tar"
            var entries: [TarEntry] = [.dir("models")]
            for n in 0..<300 { entries.append(.file("models/part-\(n).bin", Array(repeating: UInt8(n % 251), count: (n * 7919) % 70_000))) }
            entries.append(.file("models/big.bin", Array(repeating: 7, count: 9 << 20)))
            entries.append(.symlink("latest", "models/big.bin"))
            try makeTar(entries, at: source)
            let bytes = try Array(Data(contentsOf: URL(fileURLWithPath: source)))

            let output = dir + "/written.tar"
            let writer = try BackgroundFileWriter(path: output)
            let indexer = FollowingIndexer(writer: writer, path: output, layer: "test")
            var offset = 0
            while offset < bytes.count {
                let end = min(bytes.count, offset + 65_521)
                try bytes[offset..<end].withUnsafeBytes { try writer.write($0) }
                offset = end
            }
            try writer.finish()
            let streamed = try #require(indexer.join())
            let expected = try LayerIndexer.index(tarPath: source, layer: "test")
            #expect(streamed.entries == expected.entries)
            #expect(streamed.entries.count == 303)
        }
    }

    /// A writer abandoned half-way (the decompression failed) gives no index, not half of one,
    /// even when what it wrote is a valid, shorter tar: here the first 25 of 50 entries and
    /// the end-of-archive blocks, which the indexer reads to the end without an error.
    @Test func anAbandonedWriterGivesNoIndex() throws {
        try withTempDir { dir in
            let source = dir + "/source.tar"
            try makeTar((0..<50).map { .file("f\($0)", Array(repeating: 1, count: 10_000)) }, at: source)
            let bytes = try Array(Data(contentsOf: URL(fileURLWithPath: source)))
            let full = try LayerIndexer.index(tarPath: source, layer: "test")
            let cut = full.entries[24]
            let end = Int(cut.dataOffset + (cut.size + 511) / 512 * 512)
            // Zeros to a multiple of 4 MiB (at least the two end-of-archive blocks): every byte is
            // then in a whole block, which the writer hands to its file before any finish.
            let padded = (end + 1024 + (4 << 20) - 1) / (4 << 20) * (4 << 20)
            let shorter = Array(bytes[0..<end]) + [UInt8](repeating: 0, count: padded - end)
            let alone = dir + "/shorter.tar"
            try Data(shorter).write(to: URL(fileURLWithPath: alone))
            #expect(try LayerIndexer.index(tarPath: alone, layer: "test").entries.count == 25,
                    "the prefix is a valid tar: only the writer's state tells it from a whole layer")

            let output = dir + "/written.tar"
            let writer = try BackgroundFileWriter(path: output)
            let indexer = FollowingIndexer(writer: writer, path: output, layer: "test")
            try shorter.withUnsafeBytes { try writer.write($0) }
            writer.abandon()
            #expect(indexer.join() == nil)
        }
    }
}
