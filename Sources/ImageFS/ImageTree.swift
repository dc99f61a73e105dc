import Layers

/// The merged, read-only tree of an image: every layer applied in order, whiteouts honoured.
/// Immutable once built, so the FUSE server reads it from any thread without locks.
///
/// Inode numbering: inodes are numbered in depth-first order over names sorted bytewise, root
/// first, and a hardlinked file gets the number of the first path that reaches it. The number
/// depends only on the image's content, so every mount of an image answers with the same
/// numbers. FUSE inode = index + 1 (root is 1).
public struct ImageTree: Sendable {
    public struct DirEntry: Sendable, Hashable {
        public let name: String
        public let inode: UInt32
    }

    public struct Inode: Sendable {
        public var kind: EntryKind
        public var mode: UInt32
        public var uid: UInt32
        public var gid: UInt32
        public var mtimeSeconds: Int64
        public var mtimeNanoseconds: UInt32
        public var size: Int64
        /// Which layer's tar holds the bytes, and where (regular files).
        public var layer: Int32
        public var dataOffset: Int64
        /// The bytes are a file of their own beside the layer tar (see `LayerSplit`).
        public var storedApart: Bool
        public var linkTarget: String
        public var deviceMajor: UInt32
        public var deviceMinor: UInt32
        public var xattrs: [Xattr]
        public var nlink: UInt32
        /// For directories: the parent's index (root's is itself), and sorted children.
        public var parent: UInt32
        public var children: [DirEntry]
    }

    public let inodes: [Inode]

    public static let rootIndex: UInt32 = 0

    public var root: Inode { inodes[0] }

    public func inode(_ index: UInt32) -> Inode? {
        Int(index) < inodes.count ? inodes[Int(index)] : nil
    }

    /// Binary search over the sorted children of `directory`.
    public func lookup(_ directory: UInt32, _ name: String) -> UInt32? {
        guard let dir = inode(directory), dir.kind == .directory else { return nil }
        let key = Array(name.utf8)
        var low = 0
        var high = dir.children.count
        while low < high {
            let mid = (low + high) / 2
            let candidate = dir.children[mid].name
            if candidate.utf8.elementsEqual(key) { return dir.children[mid].inode }
            if candidate.utf8.lexicographicallyPrecedes(key) { low = mid + 1 } else { high = mid }
        }
        return nil
    }

    /// Resolves a relative path without following symlinks; nil if any part is missing or a
    /// non-directory stands in the middle.
    public func resolve(_ path: String) -> UInt32? {
        var current = Self.rootIndex
        for part in path.split(separator: "/") where part != "." {
            if part == ".." { current = inode(current)?.parent ?? current; continue }
            guard let next = lookup(current, String(part)) else { return nil }
            current = next
        }
        return current
    }

    /// Every path in depth-first order with its inode index (unpack and tests walk this).
    public func walk(_ body: (String, UInt32) throws -> Void) rethrows {
        func visit(_ index: UInt32, _ path: String) throws {
            try body(path, index)
            guard let node = inode(index), node.kind == .directory else { return }
            for child in node.children {
                try visit(child.inode, path.isEmpty ? child.name : path + "/" + child.name)
            }
        }
        try visit(Self.rootIndex, "")
    }

    public var totalSize: Int64 {
        inodes.reduce(0) { $0 + ($1.kind == .regular ? $1.size : 0) }
    }

    init(inodes: [Inode]) { self.inodes = inodes }
}
