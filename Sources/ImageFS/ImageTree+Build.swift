import Layers
import OCI

extension ImageTree {
    /// Applies `layers` bottom to top. Within one layer, whiteouts and opaque markers hide only
    /// what lower layers put there (OCI image spec, "Whiteouts"), so they are applied before the
    /// layer's own entries. An entry whose parent path is a symlink is refused: imgvol never
    /// writes through a link.
    public static func build(layers: [(name: String, index: LayerIndex)]) throws(LayerError) -> ImageTree {
        let builder = Builder()
        for layer in layers { try builder.apply(layer.index, name: layer.name) }
        return builder.finish()
    }

    /// `build` one layer at a time, so that a pull can merge each layer as soon as it and
    /// those below it have arrived, while the others still download.
    ///
    /// Unchecked: one caller at a time, each after the last (the pull's `LayerMerger` chains
    /// its applies); the builder's state has no lock of its own.
    public final class Builder: @unchecked Sendable {
        private let root: Node
        private var applied: Int32 = 0
        /// Entries applied so far: about the number of inodes `finish` will number.
        private var entries = 0

        public init() {
            root = Node(entry: LayerEntry(path: "", kind: .directory, mode: 0o755), layer: -1)
            root.children = [:]
        }

        /// Applies the next layer up; `name` is for errors.
        public func apply(_ index: LayerIndex, name: String) throws(LayerError) {
            try ImageTree.apply(index, layer: applied, name: name, to: root)
            applied += 1
            entries += index.entries.count
        }

        public func finish() -> ImageTree { freeze(root, expected: entries + 1) }
    }

    private final class Node {
        var entry: LayerEntry
        var layer: Int32
        var children: [String: Node]?
        /// Its inode number once `freeze` has numbered it (hard links reach a node twice).
        var number: UInt32?

        init(entry: LayerEntry, layer: Int32) {
            self.entry = entry
            self.layer = layer
            if entry.kind == .directory { children = [:] }
        }
    }

    private static func apply(_ index: LayerIndex, layer: Int32, name: String, to root: Node) throws(LayerError) {
        for entry in index.entries where entry.kind == .opaque {
            if let dir = find(entry.path, in: root), dir.children != nil { dir.children = [:] }
        }
        for entry in index.entries where entry.kind == .whiteout {
            let parent = find(TarPath.parent(entry.path), in: root)
            parent?.children?[TarPath.base(entry.path)] = nil
        }
        for entry in index.entries where entry.kind != .whiteout && entry.kind != .opaque {
            if entry.path.isEmpty {
                root.entry = merged(root.entry, with: entry)
                continue
            }
            let parent = try directory(for: entry.path, in: root, layer: name)
            let base = TarPath.base(entry.path)
            let existing = parent.children?[base]
            switch entry.kind {
            case .directory:
                if let existing, existing.children != nil {
                    existing.entry = merged(existing.entry, with: entry)
                    existing.layer = layer
                } else {
                    parent.children?[base] = Node(entry: entry, layer: layer)
                }
            case .hardlink:
                guard let target = find(entry.linkTarget, in: root), target.children == nil else {
                    throw LayerError(.danglingHardlink, layer: name, "\"\(entry.path)\" -> \"\(entry.linkTarget)\"")
                }
                parent.children?[base] = target
            default:
                parent.children?[base] = Node(entry: entry, layer: layer)
            }
        }
    }

    /// A directory entry updates attributes but keeps what lower layers put inside.
    private static func merged(_ old: LayerEntry, with new: LayerEntry) -> LayerEntry {
        var result = new
        result.path = old.path
        return result
    }

    private static func find(_ path: String, in root: Node) -> Node? {
        var node = root
        for part in PathComponents.split(path) {
            guard let next = node.children?[String(part)] else { return nil }
            node = next
        }
        return node
    }

    /// The directory that will hold `path`, creating missing parents as tar extractors do
    /// (0755, root-owned); refuses a symlink or file in the way.
    private static func directory(for path: String, in root: Node, layer: String) throws(LayerError) -> Node {
        var node = root
        let parts = PathComponents.split(TarPath.parent(path))
        // The path walked so far, only for messages and missing parents (rare): building it
        // for every component of every entry was a string allocation each.
        func walked(_ last: Int) -> String { parts[...last].joined(separator: "/") }
        for (position, part) in parts.enumerated() {
            let name = String(part)
            if let next = node.children?[name] {
                switch next.entry.kind {
                case .directory: node = next
                case .symlink:
                    throw LayerError(.unsafeEntry, layer: layer, "\"\(path)\" would be written through the symlink \"\(walked(position))\" -> \"\(next.entry.linkTarget)\"")
                default:
                    throw LayerError(.unsafeEntry, layer: layer, "\"\(path)\" has a non-directory \"\(walked(position))\" as a parent")
                }
            } else {
                let made = Node(entry: LayerEntry(path: walked(position), kind: .directory, mode: 0o755), layer: -1)
                node.children?[name] = made
                node = made
            }
        }
        return node
    }

    private static func freeze(_ root: Node, expected: Int) -> ImageTree {
        var inodes: [Inode] = []
        inodes.reserveCapacity(expected)

        func number(_ node: Node, parent: UInt32) -> UInt32 {
            if let known = node.number {
                inodes[Int(known)].nlink += 1
                return known
            }
            let index = UInt32(inodes.count)
            node.number = index
            let e = node.entry
            inodes.append(Inode(
                kind: e.kind, mode: e.mode, uid: e.uid, gid: e.gid,
                mtimeSeconds: e.mtimeSeconds, mtimeNanoseconds: e.mtimeNanoseconds,
                size: e.kind == .directory ? 4096 : e.size,
                layer: node.layer, dataOffset: e.dataOffset, storedApart: e.storedApart, linkTarget: e.linkTarget,
                deviceMajor: e.deviceMajor, deviceMinor: e.deviceMinor, xattrs: e.xattrs,
                nlink: e.kind == .directory ? 2 : 1,
                parent: index == 0 ? 0 : parent, children: []))
            if let children = node.children {
                let sorted = children.sorted { ImageTree.bytewiseLess($0.key, $1.key) }
                var entries: [DirEntry] = []
                entries.reserveCapacity(sorted.count)
                var subdirectories: UInt32 = 0
                for (name, child) in sorted {
                    let childIndex = number(child, parent: index)
                    if child.children != nil { subdirectories += 1 }
                    entries.append(DirEntry(name: name, inode: childIndex))
                }
                inodes[Int(index)].children = entries
                inodes[Int(index)].nlink = 2 + subdirectories
            }
            return index
        }
        _ = number(root, parent: 0)
        return ImageTree(inodes: inodes)
    }
}
