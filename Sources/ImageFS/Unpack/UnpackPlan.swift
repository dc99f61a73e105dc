import Layers

/// What `unpack` decides in one pass over the tree, in path order, before any file is made:
/// which path creates each hard-linked inode and which later paths become links to it, which
/// entries are not created at all, and where each directory is (for the second pass). The walk that creates entries runs on several
/// threads in no fixed order; deciding these in order keeps the result the same on every run.
struct UnpackPlan {
    /// A later name of an inode already created: made by `linkat` in the second pass.
    struct HardLink {
        let name: String
        let path: String
        let existing: String
    }

    /// A directory below the target, after its parent in this list.
    struct Directory {
        let index: UInt32
        let parent: UInt32
        /// Relative to the target.
        let path: String
    }

    /// Per directory, the hard links to make in it.
    private(set) var links: [UInt32: [HardLink]] = [:]
    /// Every directory below the target, parents first.
    private(set) var directories: [Directory] = []
    /// (directory, child position) of each name that is a hard link, not a creation.
    private var linkNames = Set<UInt64>()

    /// `onSkip` hears of every entry `unpack` does not create (devices, sockets), in path order.
    init(tree: ImageTree, target: String, onSkip: (String, EntryKind) -> Void) {
        var firstPath: [UInt32: String] = [:]
        func visit(_ index: UInt32, path: String, relative: String) {
            guard let dir = tree.inode(index) else { return }
            for (position, child) in dir.children.enumerated() {
                guard let node = tree.inode(child.inode) else { continue }
                let childPath = path + "/" + child.name
                switch node.kind {
                case .directory:
                    let childRelative = relative.isEmpty ? child.name : relative + "/" + child.name
                    directories.append(Directory(index: child.inode, parent: index, path: childRelative))
                    visit(child.inode, path: childPath, relative: childRelative)
                case .regular, .symlink, .fifo:
                    guard node.nlink > 1 else { continue }
                    if let existing = firstPath[child.inode] {
                        links[index, default: []].append(HardLink(name: child.name, path: childPath, existing: existing))
                        linkNames.insert(Self.key(index, position))
                    } else {
                        firstPath[child.inode] = childPath
                    }
                case .charDevice, .blockDevice, .socket, .hardlink, .whiteout, .opaque:
                    onSkip(childPath, node.kind)
                }
            }
        }
        visit(ImageTree.rootIndex, path: target, relative: "")
    }

    /// Whether the child at `position` of `directory` is made as a hard link, not created.
    func isLink(in directory: UInt32, at position: Int) -> Bool {
        !linkNames.isEmpty && linkNames.contains(Self.key(directory, position))
    }

    private static func key(_ directory: UInt32, _ position: Int) -> UInt64 {
        UInt64(directory) << 32 | UInt64(UInt32(truncatingIfNeeded: position))
    }
}
