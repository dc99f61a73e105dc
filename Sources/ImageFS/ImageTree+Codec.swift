import Integrity
import Layers

/// The on-disk form of a merged tree (`images/<digest>.tree`). Merging the layer indexes of a
/// 25,000-file image takes ~80 ms; loading the frozen result takes a fraction of that, which is
/// what keeps a mount of a cached image well under 0.2 s. Sealed with a CRC-64.
extension ImageTree {
    static let magic: [UInt8] = Array("IMGVOL-TREE-3\n".utf8)
    /// Version 2 had no seal; still read, as an older imgvol wrote it.
    static let magicV2: [UInt8] = Array("IMGVOL-TREE-2\n".utf8)

    public struct DecodingError: Error, CustomStringConvertible {
        public let reason: String
        public var description: String { "image tree is damaged: \(reason)" }
    }

    public func encoded() -> [UInt8] {
        // Fixed fields plus a typical name: one allocation for most trees.
        var w = BinaryWriter(capacity: Self.magic.count + 4 + inodes.count * 96)
        for b in Self.magic { w.u8(b) }
        w.u32(UInt32(inodes.count))
        for node in inodes {
            w.u8(node.kind.rawValue)
            w.u32(node.mode)
            w.u32(node.uid)
            w.u32(node.gid)
            w.i64(node.mtimeSeconds)
            w.u32(node.mtimeNanoseconds)
            w.i64(node.size)
            w.u32(UInt32(bitPattern: node.layer))
            w.i64(node.dataOffset)
            w.u8(node.storedApart ? 1 : 0)
            w.string(node.linkTarget)
            w.u32(node.deviceMajor)
            w.u32(node.deviceMinor)
            w.xattrs(node.xattrs)
            w.u32(node.nlink)
            w.u32(node.parent)
            w.u32(UInt32(node.children.count))
            for child in node.children {
                w.string(child.name)
                w.u32(child.inode)
            }
        }
        return Sealed.seal(w.bytes)
    }

    public init(decoding file: [UInt8]) throws(DecodingError) {
        guard let bytes = Sealed.body(of: file, sealedMagic: Self.magic) else { throw DecodingError(reason: "its checksum does not match") }
        guard bytes.starts(with: Self.magic) || bytes.starts(with: Self.magicV2) else { throw DecodingError(reason: "wrong magic") }
        var r = BinaryReader(Array(bytes.dropFirst(Self.magic.count)))
        do {
            let count = Int(try r.u32())
            guard count > 0, count <= bytes.count / 50 else { throw DecodingError(reason: "inode count \(count) does not fit the file") }
            var inodes: [Inode] = []
            inodes.reserveCapacity(count)
            for _ in 0..<count {
                guard let kind = EntryKind(rawValue: try r.u8()) else { throw DecodingError(reason: "unknown kind") }
                var node = Inode(kind: kind, mode: try r.u32(), uid: try r.u32(), gid: try r.u32(),
                                 mtimeSeconds: try r.i64(), mtimeNanoseconds: try r.u32(), size: try r.i64(),
                                 layer: Int32(bitPattern: try r.u32()), dataOffset: try r.i64(), storedApart: try r.u8() & 1 != 0,
                                 linkTarget: try r.string(),
                                 deviceMajor: try r.u32(), deviceMinor: try r.u32(), xattrs: [], nlink: 0, parent: 0, children: [])
                node.xattrs = try r.xattrs()
                node.nlink = try r.u32()
                node.parent = try r.u32()
                let childCount = Int(try r.u32())
                guard childCount <= count else { throw DecodingError(reason: "too many children") }
                node.children.reserveCapacity(childCount)
                for _ in 0..<childCount {
                    let name = try r.string()
                    let inode = try r.u32()
                    guard Int(inode) < count else { throw DecodingError(reason: "child points past the table") }
                    node.children.append(DirEntry(name: name, inode: inode))
                }
                guard Int(node.parent) < count else { throw DecodingError(reason: "parent points past the table") }
                inodes.append(node)
            }
            guard r.isAtEnd else { throw DecodingError(reason: "trailing bytes") }
            self.init(inodes: inodes)
        } catch let error as DecodingError {
            throw error
        } catch {
            throw DecodingError(reason: "truncated")
        }
    }
}
