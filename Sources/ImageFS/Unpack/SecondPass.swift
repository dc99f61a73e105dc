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
/// its path with openat2, beneath the target and following no symlink: on one thread this
/// took 22-28 ms of C's 0.37 s `unpack`. Where openat2 is missing (Linux before 5.6, or a
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
    func run(rootFD: Int32, target: String, parallel: Bool = true) throws {
        if parallel, try Self.canOpenBeneath(rootFD, path: target) {
            try linkAll(rootFD: rootFD, target: target)
            try finishDirectories(rootFD: rootFD, target: target)
        } else {
            try walk(directory: ImageTree.rootIndex, fd: rootFD, path: target, created: nil)
        }
    }

    private static func canOpenBeneath(_ rootFD: Int32, path: String) throws -> Bool {
        let fd = imgvol_open_directory_beneath(rootFD, ".")
        if fd >= 0 {
            close(fd)
            return true
        }
        if errno == ENOSYS || errno == EPERM || errno == EINVAL { return false }
        throw SystemError("openat2", path)
    }

    private func openBeneath(_ rootFD: Int32, _ directory: UnpackPlan.Directory, target: String) throws -> Int32 {
        let fd = imgvol_open_directory_beneath(rootFD, directory.path)
        if fd < 0 { throw SystemError("open", target + "/" + directory.path) }
        return fd
    }

    private func linkAll(rootFD: Int32, target: String) throws {
        let byIndex = Dictionary(plan.directories.map { ($0.index, $0) }, uniquingKeysWith: { first, _ in first })
        for (index, links) in plan.links {
            let directory = index == ImageTree.rootIndex ? nil : byIndex[index]
            let fd = try directory.map { try openBeneath(rootFD, $0, target: target) } ?? rootFD
            defer { if fd != rootFD { close(fd) } }
            for link in links where linkat(AT_FDCWD, link.existing, fd, link.name, 0) != 0 {
                throw SystemError("link", link.path)
            }
        }
    }

    /// Leaves first; a directory is queued when the last directory below it is done.
    private func finishDirectories(rootFD: Int32, target: String) throws {
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
            let fd = try openBeneath(rootFD, directory, target: target)
            defer { close(fd) }
            try metadata.apply(node, to: fd, path: target + "/" + directory.path, created: created)
            // The stack is unbounded: `offer` refuses only once the pass has failed.
            if let parent = position[directory.parent], unfinished.done(parent) { _ = jobs.offer(parent) }
        }
        try metadata.apply(tree.root, to: rootFD, path: target, created: nil)
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
    private func walk(directory index: UInt32, fd: Int32, path: String, created: MetadataWriter.Creation?) throws {
        guard let dir = tree.inode(index) else { return }
        for child in dir.children {
            guard let node = tree.inode(child.inode), node.kind == .directory else { continue }
            let childPath = path + "/" + child.name
            let childFD = try Unpacker.openDirectory(fd, child.name, path: childPath)
            defer { close(childFD) }
            try walk(directory: child.inode, fd: childFD, path: childPath, created: self.created)
        }
        for link in plan.links[index] ?? [] where linkat(AT_FDCWD, link.existing, fd, link.name, 0) != 0 {
            throw SystemError("link", link.path)
        }
        try metadata.apply(dir, to: fd, path: path, created: created)
    }
}
