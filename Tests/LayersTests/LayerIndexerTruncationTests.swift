import Foundation
import Layers
import Testing
import TestSupport

/// Layers whose writer left out the last file's padding and the end-of-archive blocks (umoci
/// 0.4 `insert` does) are accepted, as podman accepts them; a tar cut inside a file is not.
@Suite("LayerIndexer truncation")
struct LayerIndexerTruncationTests {
    @Test func missingPaddingAndEndOfArchiveIsAccepted() throws {
        try withTempDir { dir in
            let path = dir + "/full.tar"
            try makeTar([.file("a.txt", "hello"), .file("b.bin", [UInt8](repeating: 0x78, count: 1000))], at: path)
            let full = try readFile(path)
            let index = try LayerIndexer.index(tarPath: path, layer: "sha256:full")
            let b = try #require(index.entries.last)
            let cut = dir + "/cut.tar"
            try writeFile(Array(full.prefix(Int(b.dataOffset + b.size))), to: cut)
            let lenient = try LayerIndexer.index(tarPath: cut, layer: "sha256:cut")
            #expect(lenient.entries.map(\.path) == ["a.txt", "b.bin"])
            #expect(lenient.entries.last?.dataOffset == b.dataOffset)
        }
    }

    @Test func cutInsideAFileIsMalformed() throws {
        try withTempDir { dir in
            let path = dir + "/full.tar"
            try makeTar([.file("a.txt", "hello"), .file("b.bin", [UInt8](repeating: 0x78, count: 1000))], at: path)
            let full = try readFile(path)
            let b = try #require(try LayerIndexer.index(tarPath: path, layer: "sha256:full").entries.last)
            let cut = dir + "/cut.tar"
            try writeFile(Array(full.prefix(Int(b.dataOffset + b.size) - 100)), to: cut)
            #expect(throws: LayerError.self) { try LayerIndexer.index(tarPath: cut, layer: "sha256:cut") }
        }
    }
}
