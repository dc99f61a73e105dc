import FileIO
import Foundation
import Layers
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
final class CreationPool: @unchecked Sendable {
    /// One directory to fill; the pool closes `fd` when done with it.
    private struct Job {
        let index: UInt32
        let fd: Int32
        let path: String
    }

    private let tree: ImageTree
    private let plan: UnpackPlan
    private let metadata: MetadataWriter
    /// What is created belongs to the process's euid/egid (the target has no setgid bit).
    private let ownedByProcess: Bool
    private let layerCount: Int

    private let condition = NSCondition()
    private var queue: [Job] = []
    private let capacity: Int
    /// Jobs queued or being worked on: the pass is over when none are left.
    private var outstanding = 0
    private var running = 0
    private var failure: (any Error)?

    init(tree: ImageTree, plan: UnpackPlan, metadata: MetadataWriter, ownedByProcess: Bool, layerCount: Int, workers: Int) {
        self.tree = tree
        self.plan = plan
        self.metadata = metadata
        self.ownedByProcess = ownedByProcess
        self.layerCount = layerCount
        capacity = workers * 8
        running = workers
    }

    /// Creates everything under the directory `fd` (tree index `index`) on `workers` threads,
    /// and returns when all is written or throws the first failure. `fd` stays the caller's.
    func run(directory index: UInt32, fd: Int32, path: String, sources: [OpenFile]) throws {
        let rootFD = dup(fd)
        if rootFD < 0 { throw SystemError("dup", path) }
        condition.lock()
        queue.append(Job(index: index, fd: rootFD, path: path))
        outstanding = 1
        let workers = running
        condition.unlock()
        for n in 0..<workers {
            let thread = Thread { [self] in work(FileContentCopier(sources: sources)) }
            thread.name = "imgvol-unpack-\(n)"
            thread.stackSize = 512 << 10
            thread.start()
        }
        condition.lock()
        defer { condition.unlock() }
        while running > 0 { condition.wait() }
        if let failure { throw failure }
    }

    private func work(_ copier: FileContentCopier) {
        condition.lock()
        while true {
            while queue.isEmpty, outstanding > 0 { condition.wait() }
            guard let job = queue.popLast() else { break }
            let skip = failure != nil
            condition.unlock()
            var error: (any Error)?
            if !skip {
                do { try fill(job.index, fd: job.fd, path: job.path, copier: copier) } catch let e { error = e }
            }
            close(job.fd)
            condition.lock()
            if let error, failure == nil { failure = error }
            outstanding -= 1
            if outstanding == 0 { condition.broadcast() }
        }
        running -= 1
        condition.broadcast()
        condition.unlock()
    }

    /// Another thread failed: the rest of the pass is skipped.
    private var failed: Bool {
        condition.lock()
        defer { condition.unlock() }
        return failure != nil
    }

    /// Queues a subdirectory for any thread; false when the queue is full or the pass failed.
    private func offer(_ job: Job) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        guard failure == nil, queue.count < capacity else { return false }
        queue.append(job)
        outstanding += 1
        condition.signal()
        return true
    }

    /// Everything in one directory but hard links (the second pass makes those) and its own
    /// metadata. Subdirectories go to the queue, or are filled here when it is full.
    private func fill(_ index: UInt32, fd: Int32, path: String, copier: FileContentCopier) throws {
        guard let dir = tree.inode(index), !failed else { return }
        var files: [(name: String, path: String, node: ImageTree.Inode)] = []
        for (position, child) in dir.children.enumerated() {
            guard let node = tree.inode(child.inode), !plan.isLink(in: index, at: position) else { continue }
            let childPath = path + "/" + child.name
            switch node.kind {
            case .directory:
                if mkdirat(fd, child.name, Unpacker.newDirectoryMode) != 0 { throw SystemError("mkdir", childPath) }
                let childFD = try Unpacker.openDirectory(fd, child.name, path: childPath)
                if !offer(Job(index: child.inode, fd: childFD, path: childPath)) {
                    defer { close(childFD) }
                    try fill(child.inode, fd: childFD, path: childPath, copier: copier)
                }
            case .regular:
                if node.size > 0, node.layer < 0 || Int(node.layer) >= layerCount {
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
