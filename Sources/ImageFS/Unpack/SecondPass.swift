import CLinux
import FileIO
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// `unpack`'s second pass, once every entry exists: the hard links, then each directory's
/// owner, mode and times, a directory only after all directories below it (making an entry
/// changes its directory's mtime, and a directory the image makes read-only refuses new
/// entries). Every link is made before any directory gets its final mode.
///
/// Directories are finished on a few threads, leaves first, each reopened from the target by
/// its path with openat2, beneath the target and following no symlink (on one thread this
/// was a noticeable part of unpacking a many-directory image). Where openat2 is missing (Linux before 5.6, or a
/// seccomp filter refusing it), one thread walks the tree children first instead.
struct SecondPass: Sendable {
    let tree: ImageTree
    let plan: UnpackPlan
    let metadata: MetadataWriter
    let ownedByProcess: Bool
    let workers: Int

    /// How the first pass made each directory below the target.
    private var created: MetadataWriter.Creation { .init(mode: Unpacker.newDirectoryMode, ownedByProcess: ownedByProcess) }

    /// `parallel` false: the one-thread walk, whatever the kernel offers (tests use it).
    func run(root: OpenFile, target: String, parallel: Bool = true) throws {
        if parallel, try Self.canOpenBeneath(root, path: target) {
            try linkAll(root: root, target: target)
            try finishDirectories(root: root, target: target)
        } else {
            try walk(directory: ImageTree.rootIndex, in: root, path: target, created: nil)
        }
    }

    private static func canOpenBeneath(_ root: OpenFile, path: String) throws -> Bool {
        var fd: Int32 = -1
        guard let error = failure(of: { fd = imgvol_open_directory_beneath(root.fd, "."); return fd }) else {
            OpenFile(adopting: fd, path: path).close()
            return true
        }
        if [ENOSYS, EPERM, EINVAL].contains(error) { return false }
        throw SystemError("openat2", path, errno: error)
    }

    private func openBeneath(_ root: OpenFile, _ directory: UnpackPlan.Directory, target: String) throws -> OpenFile {
        let path = target + "/" + directory.path
        return OpenFile(adopting: try retryingEINTR("open", path) { imgvol_open_directory_beneath(root.fd, directory.path) }, path: path)
    }

    private func linkAll(root: OpenFile, target: String) throws {
        let byIndex = Dictionary(plan.directories.map { ($0.index, $0) }, uniquingKeysWith: { first, _ in first })
        for (index, links) in plan.links {
            let directory = index == ImageTree.rootIndex ? nil : byIndex[index]
            let opened = try directory.map { try openBeneath(root, $0, target: target) } ?? root
            for link in links where linkat(AT_FDCWD, link.existing, opened.fd, link.name, 0) != 0 {
                throw SystemError("link", link.path)
            }
        }
    }

    /// Leaves first; a directory is queued when the last directory below it is done.
    private func finishDirectories(root: OpenFile, target: String) throws {
        let directories = plan.directories
        let position = Dictionary(directories.enumerated().map { ($1.index, $0) }, uniquingKeysWith: { first, _ in first })
        var below = [Int](repeating: 0, count: directories.count)
        for directory in directories {
            if let parent = position[directory.parent] { below[parent] += 1 }
        }
        let leaves = directories.indices.filter { below[$0] == 0 }
        let unfinished = Countdown(below)
        let jobs = WorkStack(leaves)
        try jobs.run(threads: workers) { n, _ in
            let directory = directories[n]
            guard let node = tree.inode(directory.index) else { return }
            let opened = try openBeneath(root, directory, target: target)
            try metadata.apply(node, to: opened.fd, path: opened.path, created: created)
            // The stack is unbounded: `offer` refuses only once the pass has failed.
            if let parent = position[directory.parent], unfinished.done(parent) { _ = jobs.offer(parent) }
        }
        try metadata.apply(tree.root, to: root.fd, path: target, created: nil)
    }

    /// Per directory, how many directories right below it are not finished yet.
    private final class Countdown: Sendable {
        private let counts: Mutex<[Int]>

        init(_ counts: [Int]) { self.counts = Mutex(counts) }

        /// One more below `n` is finished; true when that was the last.
        func done(_ n: Int) -> Bool {
            counts.withLock { counts in
                counts[n] -= 1
                return counts[n] == 0
            }
        }
    }

    /// Children first, one thread, through descriptors opened down from the target.
    /// `created`: how the first pass made this directory (nil for the target itself).
    private func walk(directory index: UInt32, in directory: OpenFile, path: String, created: MetadataWriter.Creation?) throws {
        guard let dir = tree.inode(index) else { return }
        for child in dir.children {
            guard let node = tree.inode(child.inode), node.kind == .directory else { continue }
            let childPath = path + "/" + child.name
            let subdirectory = try Unpacker.openDirectory(directory.fd, child.name, path: childPath)
            try walk(directory: child.inode, in: subdirectory, path: childPath, created: self.created)
        }
        for link in plan.links[index] ?? [] where linkat(AT_FDCWD, link.existing, directory.fd, link.name, 0) != 0 {
            throw SystemError("link", link.path)
        }
        try metadata.apply(dir, to: directory.fd, path: path, created: created)
    }
}
