import FileIO
import Foundation
import Layers
import Store
#if canImport(Glibc)
import Glibc
#endif

/// `unpack`'s first pass on a few threads: each job is one directory, whose subdirectories,
/// symlinks, fifos and regular files (with their bytes) the thread creates. Subdirectories
/// become jobs of their own, so no thread waits for another to make the directories it
/// writes in: with one thread creating every directory and the others its files, the others
/// found nothing to do about a thousand times per unpack of 21,000 files.
///
/// Every name is created relative to a directory descriptor opened with O_NOFOLLOW. The queue
/// is bounded: a thread that finds it full goes down into the subdirectory itself, so the
/// descriptors held open are at most the queue's plus the tree's depth per thread.
struct CreationPool: Sendable {
    /// One directory to fill; its descriptor is closed when the job is let go.
    struct Job: Sendable {
        let index: UInt32
        let directory: OpenFile
        let path: String
    }

    let tree: ImageTree
    let plan: UnpackPlan
    let metadata: MetadataWriter
    /// What is created belongs to the process's euid/egid (the target has no setgid bit).
    let ownedByProcess: Bool
    let sources: [LayerData]
    let workers: Int

    /// Creates everything under `directory` (tree index `index`) and returns when all is
    /// written, or throws the first failure.
    func run(directory index: UInt32, in directory: OpenFile, path: String) throws {
        let jobs = WorkStack([Job(index: index, directory: directory, path: path)], capacity: workers * 8)
        // One copier (and its buffer) per thread.
        // One checker per layer, shared: each chunk is checked once, whichever writer reads it.
        let verifiers = sources.map { $0.verifier() }
        let copiers = (0..<workers).map { _ in FileContentCopier(sources: sources, verifiers: verifiers) }
        try jobs.run(threads: workers) { job, thread in
            try fill(job.index, in: job.directory, path: job.path, copier: copiers[thread], jobs: jobs)
        }
    }

    /// Everything in one directory but hard links (the second pass makes those) and its own
    /// metadata. Subdirectories go to the queue, or are filled here when it is full.
    private func fill(_ index: UInt32, in directory: OpenFile, path: String, copier: FileContentCopier, jobs: WorkStack<Job>) throws {
        guard let dir = tree.inode(index), !jobs.failed else { return }
        let fd = directory.fd
        var files: [(name: String, path: String, node: ImageTree.Inode)] = []
        for (position, child) in dir.children.enumerated() {
            guard let node = tree.inode(child.inode), !plan.isLink(in: index, at: position) else { continue }
            let childPath = path + "/" + child.name
            switch node.kind {
            case .directory:
                if mkdirat(fd, child.name, Unpacker.newDirectoryMode) != 0 { throw SystemError("mkdir", childPath) }
                let subdirectory = try Unpacker.openDirectory(fd, child.name, path: childPath)
                if !jobs.offer(Job(index: child.inode, directory: subdirectory, path: childPath)) {
                    try fill(child.inode, in: subdirectory, path: childPath, copier: copier, jobs: jobs)
                }
            case .regular:
                if node.size > 0, node.layer < 0 || Int(node.layer) >= sources.count {
                    throw Unpacker.Failure(path: childPath, reason: "no layer holds its content")
                }
                files.append((child.name, childPath, node))
            case .symlink:
                if symlinkat(node.linkTarget, fd, child.name) != 0 { throw SystemError("symlink", childPath) }
                try metadata.apply(node, in: fd, name: child.name, path: childPath)
            case .fifo:
                if mkfifoat(fd, child.name, 0o600) != 0 { throw SystemError("mkfifo", childPath) }
                try metadata.apply(node, in: fd, name: child.name, path: childPath)
            case .charDevice, .blockDevice, .socket, .hardlink, .whiteout, .opaque:
                continue  // reported by the plan
            }
        }
        for file in files {
            let mode = MetadataWriter.creationMode(file.node)
            let target = OpenFile(adopting: try retryingEINTR("create", file.path) {
                openat(fd, file.name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode)
            }, path: file.path)
            defer { target.close() }
            try copier.fill(target, with: file.node)
            try metadata.apply(file.node, to: target.fd, path: file.path, created: .init(mode: mode, ownedByProcess: ownedByProcess))
        }
    }
}
