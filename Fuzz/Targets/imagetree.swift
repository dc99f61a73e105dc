// Target `imagetree`: `ImageTree(decoding:)`, the merged tree file (`images/<digest>.tree`,
// ImageFS/ImageTree+Codec.swift), and lookups on what it decodes (FUSE's lookup and the path
// resolution). Property: what decodes re-encodes to a fixed point.
import ImageFS

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzImageTree(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    guard let tree = try? ImageTree(decoding: bytes(data, size)) else { return 0 }
    let encoded = tree.encoded()
    guard let again = try? ImageTree(decoding: encoded) else { violated("a tree does not decode from its own encoding") }
    guard again.encoded() == encoded else { violated("a tree changes through its codec") }
    for i in 0..<min(tree.inodes.count, 64) {
        for child in tree.inodes[i].children.prefix(8) {
            _ = tree.lookup(UInt32(i), child.name)
        }
        _ = tree.lookup(UInt32(i), "x")
    }
    _ = tree.resolve("a/../b/./c")
    _ = tree.inode(UInt32(tree.inodes.count))
    return 0
}
