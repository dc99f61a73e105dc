import FileIO
import Layers
#if canImport(Glibc)
import Glibc
#endif

/// Writes an image tree into a directory for tools that cannot use a FUSE mount. Every name
/// is created relative to a directory descriptor imgvol opened itself with O_NOFOLLOW, so no
/// entry can lead a write outside the target.
///
/// Two passes. The first walks the tree in order, creating directories, symlinks and fifos
/// itself and handing each directory's regular files to a few writer threads: creating many
/// small files is the cost (21,000 files in 3,758 directories: 1.6 s on one thread), and the
/// file system takes creations in different directories in parallel. The second, after the
/// writers are done, makes the hard links and sets each directory's owner, mode and times,
/// children first, since creating an entry changes its directory's mtime.
public struct Unpacker {
    public struct Failure: Error, CustomStringConvertible {
        public let path: String
        public let reason: String
        public var description: String { "unpacking \"\(path)\": \(reason)" }
    }

    public let tree: ImageTree
    /// One uncompressed tar per layer, in the order the tree's `layer` numbers use.
    public let layerFiles: [String]
    /// Skipped entry kinds are reported here (devices, sockets).
    public var onSkip: (String, EntryKind) -> Void = { _, _ in }
    /// Threads writing regular files.
    public var writers = 4

    public init(tree: ImageTree, layerFiles: [String]) {
        self.tree = tree
        self.layerFiles = layerFiles
    }

    /// Directories stay private to the process until the second pass gives them their mode.
    static let newDirectoryMode: mode_t = 0o700

    /// A later name for an inode already created: made by `linkat` in the second pass.
    private struct HardLink {
        let name: String
        let path: String
        let existing: String
    }

    public func unpack(into target: String) throws {
        try prepare(target)
        let sources = try layerFiles.map { try OpenFile.openRead($0) }
        let rootFD = try openDirectory(AT_FDCWD, target, path: target)
        defer { close(rootFD) }
        var rootStat = stat()
        if fstat(rootFD, &rootStat) != 0 { throw SystemError("stat", target) }
        let rootSetsGroup = rootStat.st_mode & S_ISGID != 0
        let metadata = MetadataWriter(asRoot: geteuid() == 0)
        var links: [UInt32: [HardLink]] = [:]
        let pool = FileWriterPool(workers: max(1, writers), sources: sources, metadata: metadata)
        do {
            var firstPath: [UInt32: String] = [:]
            try create(directory: ImageTree.rootIndex, fd: rootFD, path: target, pool: pool,
                       ownedByProcess: !rootSetsGroup, firstPath: &firstPath, links: &links)
        } catch {
            try? pool.finish()
            throw error
        }
        try pool.finish()
        try complete(directory: ImageTree.rootIndex, fd: rootFD, path: target, links: links, metadata: metadata,
                     created: nil, ownedByProcess: !rootSetsGroup)
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

    private func openDirectory(_ parent: Int32, _ name: String, path: String) throws -> Int32 {
        try retryingEINTR("open", path) { openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
    }

    /// First pass: everything but regular files' contents, hard links and directory metadata.
    /// `ownedByProcess`: what is created here belongs to the process's euid/egid. False under a
    /// setgid target: new entries take its group, and new directories its setgid bit too.
    private func create(directory index: UInt32, fd: Int32, path: String, pool: FileWriterPool, ownedByProcess: Bool,
                        firstPath: inout [UInt32: String], links: inout [UInt32: [HardLink]]) throws {
        guard let dir = tree.inode(index) else { return }
        var files: [FileWriterPool.File] = []
        let metadata = pool.metadata
        for child in dir.children {
            guard let node = tree.inode(child.inode) else { continue }
            let childPath = path + "/" + child.name
            if node.kind != .directory, let existing = firstPath[child.inode] {
                links[index, default: []].append(HardLink(name: child.name, path: childPath, existing: existing))
                continue
            }
            switch node.kind {
            case .directory:
                if mkdirat(fd, child.name, Self.newDirectoryMode) != 0 { throw SystemError("mkdir", childPath) }
                let childFD = try openDirectory(fd, child.name, path: childPath)
                defer { close(childFD) }
                try create(directory: child.inode, fd: childFD, path: childPath, pool: pool, ownedByProcess: ownedByProcess,
                           firstPath: &firstPath, links: &links)
            case .regular:
                if node.size > 0, node.layer < 0 || Int(node.layer) >= layerFiles.count {
                    throw Failure(path: childPath, reason: "no layer holds its content")
                }
                files.append(FileWriterPool.File(name: child.name, path: childPath, node: node))
                firstPath[child.inode] = childPath
            case .symlink:
                if symlinkat(node.linkTarget, fd, child.name) != 0 { throw SystemError("symlink", childPath) }
                try metadata.apply(node, in: fd, name: child.name, path: childPath)
                firstPath[child.inode] = childPath
            case .fifo:
                if mkfifoat(fd, child.name, 0o600) != 0 { throw SystemError("mkfifo", childPath) }
                try metadata.apply(node, in: fd, name: child.name, path: childPath)
                firstPath[child.inode] = childPath
            case .charDevice, .blockDevice, .socket, .hardlink, .whiteout, .opaque:
                onSkip(childPath, node.kind)
            }
        }
        if !files.isEmpty {
            let jobFD = dup(fd)
            if jobFD < 0 { throw SystemError("dup", path) }
            try pool.submit(FileWriterPool.Job(directoryFD: jobFD, files: files, ownedByProcess: ownedByProcess))
        }
    }

    /// Second pass, children first: hard links, then the directory's own metadata.
    /// `created`: how the first pass made this directory (nil for the target itself).
    private func complete(directory index: UInt32, fd: Int32, path: String, links: [UInt32: [HardLink]],
                          metadata: MetadataWriter, created: MetadataWriter.Creation?, ownedByProcess: Bool) throws {
        guard let dir = tree.inode(index) else { return }
        for child in dir.children {
            guard let node = tree.inode(child.inode), node.kind == .directory else { continue }
            let childPath = path + "/" + child.name
            let childFD = try openDirectory(fd, child.name, path: childPath)
            defer { close(childFD) }
            try complete(directory: child.inode, fd: childFD, path: childPath, links: links, metadata: metadata,
                         created: .init(mode: Self.newDirectoryMode, ownedByProcess: ownedByProcess),
                         ownedByProcess: ownedByProcess)
        }
        for link in links[index] ?? [] where linkat(AT_FDCWD, link.existing, fd, link.name, 0) != 0 {
            throw SystemError("link", link.path)
        }
        try metadata.apply(dir, to: fd, path: path, created: created)
    }
}
