import FileIO
import Layers
import Store
#if canImport(Glibc)
import Glibc
#endif

/// Writes an image tree into a directory for tools that cannot use a FUSE mount. Every name
/// is created relative to a directory descriptor imgvol opened itself (O_NOFOLLOW), so no
/// entry can lead a write outside the target.
///
/// A plan, then two passes. The plan (`UnpackPlan`) goes over the tree in path order and
/// decides which names of a hard-linked inode are links. The first pass creates directories,
/// symlinks, fifos and regular files with their bytes, one directory per job on a few
/// threads (`CreationPool`): creating many small files is the cost, and the file system takes
/// creations in different
/// directories in parallel. The second (`SecondPass`), after the first is done, makes the
/// hard links and sets each directory's owner, mode and times, children first, since
/// creating an entry changes its directory's mtime; it reopens directories beneath the
/// target with openat2, following no symlink.
public struct Unpacker {
    public struct Failure: Error, CustomStringConvertible {
        public let path: String
        public let reason: String
        public var description: String { "unpacking \"\(path)\": \(reason)" }
    }

    public let tree: ImageTree
    /// Each layer's bytes, in the order the tree's `layer` numbers use.
    public let layers: [LayerData]
    /// Skipped entry kinds are reported here (devices, sockets), in path order, before the
    /// first entry is created.
    public var onSkip: (String, EntryKind) -> Void = { _, _ in }
    /// Threads creating entries.
    public var writers = 4
    /// Off: the second pass runs on one thread even where openat2 exists (tests run both).
    var parallelSecondPass = true

    public init(tree: ImageTree, layers: [LayerData]) {
        self.tree = tree
        self.layers = layers
    }

    /// Directories stay private to the process until the second pass gives them their mode.
    static let newDirectoryMode: mode_t = 0o700

    public func unpack(into target: String) throws {
        try prepare(target)
        let root = try Self.openDirectory(AT_FDCWD, target, path: target)
        var rootStat = stat()
        if fstat(root.fd, &rootStat) != 0 { throw SystemError("stat", target) }
        let ownedByProcess = rootStat.st_mode & S_ISGID == 0
        let metadata = MetadataWriter(asRoot: geteuid() == 0)
        let plan = UnpackPlan(tree: tree, target: target, onSkip: onSkip)
        let pool = CreationPool(tree: tree, plan: plan, metadata: metadata, ownedByProcess: ownedByProcess,
                                sources: layers, workers: max(1, writers))
        try pool.run(directory: ImageTree.rootIndex, in: root, path: target)
        try SecondPass(tree: tree, plan: plan, metadata: metadata, ownedByProcess: ownedByProcess, workers: max(1, writers))
            .run(root: root, target: target, parallel: parallelSecondPass)
    }

    private func prepare(_ target: String) throws {
        if FileSystem.exists(target) {
            guard FileSystem.isDirectory(target) else { throw Failure(path: target, reason: "exists and is not a directory") }
            guard FileSystem.listDirectory(target).isEmpty else {
                throw Failure(path: target, reason: "directory is not empty; give a new or empty directory")
            }
        } else {
            try FileSystem.makeDirectory(target, mode: 0o700)
        }
    }

    /// `name` below the directory `parent` (or AT_FDCWD), not following a symlink.
    static func openDirectory(_ parent: Int32, _ name: String, path: String) throws -> OpenFile {
        OpenFile(adopting: try retryingEINTR("open", path) { openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) },
                 path: path)
    }
}
