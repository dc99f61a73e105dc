import ImageFS
import Layers
import Testing

@Suite("ImageTree codec")
struct ImageTreeCodecTests {
    let tree: ImageTree = {
        let layers: [[LayerEntry]] = [
            [e("dir/a", size: 5, offset: 512), e("dir/b", .symlink, link: "../x"), e("dev", .directory),
             LayerEntry(path: "dev/null", kind: .charDevice, mode: 0o666, deviceMajor: 1, deviceMinor: 3),
             LayerEntry(path: "x", kind: .regular, mode: 0o4755, uid: 7, gid: 8, mtimeSeconds: 1_700_000_000,
                        mtimeNanoseconds: 42, size: 3, dataOffset: 2048, xattrs: [Xattr(name: "user.k", value: [1, 2, 3])])],
            [e("h", .hardlink, link: "x"), e("dir/a", .whiteout), e("ünïcode", size: 1, offset: 4096)],
        ]
        // The fixture is valid by construction; a failure here is a test bug.
        return (try? ImageTree.build(layers: layers.enumerated().map { (name: "l\($0.offset)", index: LayerIndex(entries: $0.element)) }))
            ?? ImageTree.emptyForTests
    }()

    @Test func roundTripKeepsEveryField() throws {
        let decoded = try ImageTree(decoding: tree.encoded())
        #expect(decoded.inodes.count == tree.inodes.count)
        #expect(decoded.inodes.count > 5)
        for (a, b) in zip(tree.inodes, decoded.inodes) {
            #expect(a.kind == b.kind && a.mode == b.mode && a.uid == b.uid && a.gid == b.gid)
            #expect(a.mtimeSeconds == b.mtimeSeconds && a.mtimeNanoseconds == b.mtimeNanoseconds)
            #expect(a.size == b.size && a.layer == b.layer && a.dataOffset == b.dataOffset)
            #expect(a.linkTarget == b.linkTarget && a.deviceMajor == b.deviceMajor && a.deviceMinor == b.deviceMinor)
            #expect(a.xattrs == b.xattrs && a.nlink == b.nlink && a.parent == b.parent && a.children == b.children)
        }
        #expect(decoded.resolve("h") == decoded.resolve("x"))
        #expect(decoded.inode(decoded.resolve("x") ?? 0)?.nlink == 2)
        #expect(decoded.resolve("dir/a") == nil)
    }

    @Test func damagedInputIsAnError() {
        let good = tree.encoded()
        #expect(throws: ImageTree.DecodingError.self) { try ImageTree(decoding: Array(good.dropLast())) }
        #expect(throws: ImageTree.DecodingError.self) { try ImageTree(decoding: good + [0]) }
        #expect(throws: ImageTree.DecodingError.self) { try ImageTree(decoding: Array("nope".utf8)) }
        var corrupt = good
        corrupt[corrupt.count - 1] = 0xff  // the last child's inode number now points past the table
        #expect(throws: ImageTree.DecodingError.self) { try ImageTree(decoding: corrupt) }
    }

    /// Every flipped bit of a sealed tree is refused, even one that would still parse (a size,
    /// an offset); the unsealed form older imgvols wrote still reads.
    @Test func sealRefusesEveryFlippedBit() throws {
        let good = tree.encoded()
        for bit in stride(from: 0, to: good.count * 8, by: 5) {
            var flipped = good
            flipped[bit / 8] ^= UInt8(1 << (bit % 8))
            #expect(throws: ImageTree.DecodingError.self) { try ImageTree(decoding: flipped) }
        }
        let v2 = Array("IMGVOL-TREE-2\n".utf8) + good.dropFirst("IMGVOL-TREE-3\n".utf8.count).dropLast(8)
        #expect(try ImageTree(decoding: v2).inodes.count == tree.inodes.count)
    }
}

extension ImageTree {
    static var emptyForTests: ImageTree { (try? ImageTree.build(layers: [])) ?? { fatalError("empty tree") }() }
}
