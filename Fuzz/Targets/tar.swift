// Target `tar`: a layer tar through `TarSplitter` (Layers/TarSplitter.swift) and through
// `LayerIndexer` with the real libarchive (Layers/LayerIndexer.swift), then the one-layer
// merge `ImageTree.build` (ImageFS/ImageTree+Build.swift).
// Properties: the split tar with its holes filled from the split files is the input, byte for
// byte, however the input is cut into writes; every indexed path is normal (no "..", no
// leading "/"); an index and a built tree come back the same through their codecs; every path
// the tree walks resolves to the inode it was walked to.
import FileIO
import ImageFS
import Layers

final class Recorder: TarSplitterOutput {
    var tar: [UInt8] = []
    var files: [(offset: Int64, size: Int64, bytes: [UInt8], ended: Bool)] = []
    var open = false

    func tar(_ bytes: UnsafeRawBufferPointer) throws {
        guard !open else { violated("tar bytes inside a split file") }
        tar.append(contentsOf: bytes)
    }
    func tarHole(_ count: Int64) throws {
        guard open, count >= 0 else { violated("a hole outside a split file") }
        tar.append(contentsOf: repeatElement(0, count: Int(count)))
    }
    func beginFile(at offset: Int64, size: Int64) throws {
        guard !open, offset == Int64(tar.count), size >= 0 else { violated("beginFile at \(offset) with \(tar.count) tar bytes") }
        files.append((offset, size, [], false))
        open = true
    }
    func file(_ bytes: UnsafeRawBufferPointer) throws {
        guard open else { violated("file bytes outside a split file") }
        files[files.count - 1].bytes.append(contentsOf: bytes)
        open = true
    }
    func endFile() throws {
        guard open, let last = files.last, Int64(last.bytes.count) == last.size else { violated("endFile with the wrong byte count") }
        files[files.count - 1].ended = true
        open = false
    }

    /// The tar with every hole filled from its file.
    var reassembled: [UInt8] {
        var out = tar
        for f in files { out.replaceSubrange(Int(f.offset)..<Int(f.offset) + f.bytes.count, with: f.bytes) }
        return out
    }
}

func split(_ input: [UInt8], cuts: [Int], threshold: Int64) -> Recorder {
    let recorder = Recorder()
    let splitter = TarSplitter(output: recorder, threshold: threshold)
    input.withUnsafeBytes { all in
        var start = 0
        var i = 0
        while start < all.count {
            let n = min(cuts.isEmpty ? all.count : max(1, cuts[i % cuts.count]), all.count - start)
            do { try splitter.write(UnsafeRawBufferPointer(rebasing: all[start..<start + n])) } catch { violated("the recorder threw \(error)") }
            start += n
            i += 1
        }
    }
    guard splitter.position == Int64(input.count) else { violated("position \(splitter.position) after \(input.count) bytes") }
    return recorder
}

final class MemorySource: PositionalSource {
    let bytes: [UInt8]
    init(_ bytes: [UInt8]) { self.bytes = bytes }
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) throws -> Int {
        guard offset >= 0, offset <= Int64(bytes.count) else { violated("read at \(offset) of \(bytes.count)") }
        let n = min(buffer.count, bytes.count - Int(offset))
        bytes.withUnsafeBytes { src in buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: src[Int(offset)..<Int(offset) + n])) }
        return n
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTar(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let input = bytes(data, size)

    // Splitting, small threshold so that small inputs have big files: whole, then in odd cuts.
    let whole = split(input, cuts: [], threshold: 512)
    guard whole.reassembled == input else { violated("the split tar does not reassemble to the input") }
    let cut = split(input, cuts: [1, 511, 7, 1024, 513, 3], threshold: 512)
    guard cut.tar == whole.tar, cut.files.map(\.offset) == whole.files.map(\.offset), cut.files.map(\.bytes) == whole.files.map(\.bytes) else {
        violated("the split depends on how the input is cut into writes")
    }

    // Indexing with libarchive.
    let index: LayerIndex
    do { index = try LayerIndexer.index(source: MemorySource(input), size: Int64(input.count), layer: "fuzz") } catch {
        _ = error.description
        return 0
    }
    for e in index.entries {
        guard isNormalPath(e.path) else { violated("indexed path \(e.path.debugDescription) is not normal") }
        if e.kind == .hardlink, e.linkTarget.isEmpty || !isNormalPath(e.linkTarget) { violated("hardlink target \(e.linkTarget.debugDescription)") }
        if e.kind == .regular, e.size < 0 || e.dataOffset < 0 { violated("regular file \(e.path.debugDescription) at \(e.dataOffset) size \(e.size)") }
    }
    guard let decoded = try? LayerIndex(decoding: index.encoded()), decoded == index else { violated("the index changes through its codec") }

    // Merging into a tree (one layer), and the tree's codec.
    guard let tree = try? ImageTree.build(layers: [(name: "fuzz", index: index)]) else { return 0 }
    let encoded = tree.encoded()
    guard let back = try? ImageTree(decoding: encoded), back.encoded() == encoded else { violated("the built tree changes through its codec") }
    tree.walk { path, inode in
        guard let found = tree.resolve(path), found == inode else { violated("walked \(path.debugDescription) to \(inode), resolves to \(String(describing: tree.resolve(path)))") }
    }
    return 0
}
