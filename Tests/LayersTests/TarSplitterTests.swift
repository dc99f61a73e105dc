import FileIO
import Foundation
@testable import Layers
import TestSupport
import Testing

/// Collects what a splitter sends where: the tar with its holes as zeros, and each file.
private final class Recorder: TarSplitterOutput {
    var tar: [UInt8] = []
    var files: [Int64: [UInt8]] = [:]
    var declared: [Int64: Int64] = [:]
    private var current: Int64?

    func tar(_ bytes: UnsafeRawBufferPointer) throws { tar += bytes }
    func tarHole(_ count: Int64) throws { tar += [UInt8](repeating: 0, count: Int(count)) }
    func beginFile(at offset: Int64, size: Int64) throws {
        current = offset
        files[offset] = []
        declared[offset] = size
    }
    func file(_ bytes: UnsafeRawBufferPointer) throws {
        guard let current else { Issue.record("file bytes outside a file"); return }
        files[current, default: []] += bytes
    }
    func endFile() throws { current = nil }
}

@Suite("TarSplitter")
struct TarSplitterTests {
    /// Splits the tar made of `entries`, fed in pieces of `piece` bytes, and checks it against
    /// libarchive's index: every regular file of at least `threshold` bytes, and only those, is
    /// apart at its data offset; the tar keeps a hole there; filling the holes gives the tar back.
    private func check(_ entries: [TarEntry], format: String, threshold: Int64, piece: Int) throws -> Recorder {
        try withTempDir { dir in
            let path = dir + "/layer.tar"
            try makeTar(entries, at: path, format: format)
            let original = try readFile(path)
            let index = try LayerIndexer.index(tarPath: path, layer: "sha256:test")
            let recorder = Recorder()
            let splitter = TarSplitter(output: recorder, threshold: threshold)
            try original.withUnsafeBytes { all in
                var start = 0
                while start < all.count {
                    let end = min(all.count, start + piece)
                    try splitter.write(UnsafeRawBufferPointer(rebasing: all[start..<end]))
                    start = end
                }
            }
            #expect(splitter.position == Int64(original.count))
            #expect(recorder.tar.count == original.count)
            let expected = index.entries.filter { $0.kind == .regular && $0.size >= threshold }
            #expect(Set(recorder.files.keys) == Set(expected.map(\.dataOffset)), "\(format) piece \(piece)")
            var rebuilt = recorder.tar
            for e in expected {
                let range = Int(e.dataOffset)..<Int(e.dataOffset + e.size)
                #expect(recorder.declared[e.dataOffset] == e.size)
                #expect(recorder.files[e.dataOffset] == Array(original[range]), "\(e.path)")
                #expect(recorder.tar[range].allSatisfy { $0 == 0 }, "\(e.path) is still in the tar")
                rebuilt.replaceSubrange(range, with: recorder.files[e.dataOffset] ?? [])
            }
            #expect(rebuilt == original)
            return recorder
        }
    }

    private var entries: [TarEntry] {
        let longName = String(repeating: "d/", count: 70) + "a-big-file-with-a-long-name"
        return [
            .dir("dir"),
            .file("dir/small", pseudoRandomBytes(4000, seed: 1)),
            .file("dir/big", pseudoRandomBytes(70_000, seed: 2)),
            .file("dir/exact", pseudoRandomBytes(8192, seed: 3)),
            .file("dir/just-under", pseudoRandomBytes(8191, seed: 4)),
            .file(longName, pseudoRandomBytes(9000, seed: 5)),
            .symlink("dir/link", "big"),
            .hardlink("dir/hard", "dir/big"),
            .file("dir/empty", []),
            .file("dir/odd", pseudoRandomBytes(10_001, seed: 6)),
        ]
    }

    @Test("big regular files go apart, in any piece size", arguments: ["pax", "gnu", "ustar"], [1, 511, 4096, 1 << 20])
    func splitsBigFiles(format: String, piece: Int) throws {
        let names = format == "ustar" ? entries.filter { $0.name.count < 100 } : entries
        let recorder = try check(names, format: format, threshold: 8192, piece: piece)
        #expect(recorder.files.count == (format == "ustar" ? 3 : 4))
    }

    @Test func paxHeadersAreReadNotSplit() throws {
        var big = TarEntry.file("with-pax", pseudoRandomBytes(20_000, seed: 7))
        big.pax = ["comment": String(repeating: "c", count: 3000)]
        let recorder = try check([big, .file("after", pseudoRandomBytes(16_384, seed: 8))], format: "pax", threshold: 8192, piece: 1000)
        #expect(recorder.files.count == 2)
    }

    @Test func aDamagedHeaderPassesTheRestThrough() throws {
        try withTempDir { dir in
            let path = dir + "/layer.tar"
            try makeTar([.file("first", pseudoRandomBytes(10_000, seed: 9)), .file("second", pseudoRandomBytes(10_000, seed: 10))],
                        at: path, format: "ustar")
            var bytes = try readFile(path)
            // The second header starts after the first (512 + 10,000 rounded up to 10,240).
            bytes[512 + 10_240 + 148] ^= 1
            let recorder = Recorder()
            let splitter = TarSplitter(output: recorder, threshold: 8192)
            try bytes.withUnsafeBytes { try splitter.write($0) }
            #expect(recorder.files.keys.sorted() == [512])
            #expect(Array(recorder.tar[(512 + 10_240)...]) == Array(bytes[(512 + 10_240)...]))
        }
    }

    @Test func numericFields() {
        func field(_ bytes: [UInt8]) -> ArraySlice<UInt8> { ArraySlice(bytes) }
        #expect(TarSplitter.number(field(Array("00000001750\0".utf8))) == 0o1750)
        #expect(TarSplitter.number(field(Array("   1750 \0\0\0\0".utf8))) == 0o1750)
        #expect(TarSplitter.number(field([UInt8](repeating: 0, count: 12))) == 0)
        #expect(TarSplitter.number(field([0x80, 0, 0, 0, 0, 0, 0, 0x02, 0, 0, 0, 1])) == 8_589_934_593)
        #expect(TarSplitter.number(field([0xff] + [UInt8](repeating: 0xff, count: 11))) == nil)
        #expect(TarSplitter.number(field(Array("12x4".utf8))) == nil)
    }
}

@Suite("LayerSplit")
struct LayerSplitTests {
    @Test func writesTheTarWithHolesAndMarksTheFilesApart() throws {
        try withTempDir { dir in
            let source = dir + "/source.tar"
            let big = pseudoRandomBytes(Int(TarSplitter.threshold) + 1234, seed: 11)
            try makeTar([.file("small", "s"), .file("big", big), .file("tail", "t")], at: source, format: "pax")
            let original = try readFile(source)
            let tarPath = dir + "/layer.tar"
            let files = ApartFiles(directory: dir + "/layer.files")
            let writer = LayerSplitWriter(tar: try BackgroundFileWriter(path: tarPath), apart: files, layer: "sha256:test")
            let splitter = TarSplitter(output: writer)
            try original.withUnsafeBytes { try splitter.write($0) }
            try writer.finish()
            #expect(writer.files.count == 1)
            var index = try LayerIndexer.index(tarPath: tarPath, layer: "sha256:test")
            LayerSplit.markApart(&index, files: files)
            #expect(index.entries.map(\.storedApart) == [false, true, false])
            let entry = index.entries[1]
            let apart = files.path(offset: entry.dataOffset)
            #expect(try readFile(apart) == big)
            #expect(FileSystem.diskUsage(tarPath) < 64 << 10, "the tar keeps a hole, not the bytes")
            #expect(try readFile(tarPath).count == original.count)
            // Nothing to put back: the index confirms the split.
            try LayerSplit.reconcile(index, files: writer.files, tarPath: tarPath, apart: files)
            #expect(FileSystem.exists(apart))
        }
    }

    @Test func aLayerEndingInsideABigFileIsAnError() throws {
        try withTempDir { dir in
            let source = dir + "/source.tar"
            try makeTar([.file("big", pseudoRandomBytes(Int(TarSplitter.threshold) + 10, seed: 13))], at: source, format: "ustar")
            let truncated = Array(try readFile(source).prefix(512 + 4096))
            let writer = LayerSplitWriter(tar: try BackgroundFileWriter(path: dir + "/layer.tar"),
                                          apart: ApartFiles(directory: dir + "/layer.files"), layer: "sha256:test")
            try truncated.withUnsafeBytes { try TarSplitter(output: writer).write($0) }
            #expect(throws: LayerError.self) { try writer.finish() }
        }
    }

    @Test func aSplitTheIndexDoesNotConfirmGoesBackIntoTheTar() throws {
        try withTempDir { dir in
            let tarPath = dir + "/layer.tar"
            let data = pseudoRandomBytes(5000, seed: 12)
            try makeTar([.file("f", data)], at: tarPath, format: "ustar")
            let original = try readFile(tarPath)
            let index = try LayerIndexer.index(tarPath: tarPath, layer: "sha256:test")
            let offset = index.entries[0].dataOffset
            // As if the splitter had taken 4,000 bytes apart where libarchive sees 5,000.
            let files = ApartFiles(directory: dir + "/layer.files")
            try FileSystem.makeDirectory(files.directory)
            try writeFile(Array(data[0..<4000]), to: files.path(offset: offset))
            var holed = original
            holed.replaceSubrange(Int(offset)..<Int(offset) + 4000, with: [UInt8](repeating: 0, count: 4000))
            try writeFile(holed, to: tarPath)
            try LayerSplit.reconcile(index, files: [offset: 4000], tarPath: tarPath, apart: files)
            #expect(try readFile(tarPath) == original)
            #expect(!FileSystem.exists(files.path(offset: offset)))
        }
    }
}
