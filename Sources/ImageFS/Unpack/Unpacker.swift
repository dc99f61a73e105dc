import CLinux
import FileIO
import Layers
#if canImport(Glibc)
import Glibc
#endif

/// Writes an image tree into a directory for tools that cannot use a FUSE mount. File bytes are
/// copied with copy_file_range straight from the layer tars (in-kernel, reflinked where the
/// file system can). Every name is created relative to a directory descriptor imgvol opened
/// itself with O_NOFOLLOW, so no entry can lead a write outside the target.
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

    public init(tree: ImageTree, layerFiles: [String]) {
        self.tree = tree
        self.layerFiles = layerFiles
    }

    public func unpack(into target: String) throws {
        try prepare(target)
        let sources = try layerFiles.map { try OpenFile.openRead($0) }
        let rootFD = try retryingEINTR("open", target) { open(target, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
        defer { close(rootFD) }
        var firstPath: [UInt32: String] = [:]
        let asRoot = geteuid() == 0
        try write(directory: ImageTree.rootIndex, fd: rootFD, path: target, sources: sources, firstPath: &firstPath, asRoot: asRoot)
        try finish(fd: rootFD, node: tree.root, path: target, asRoot: asRoot)
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

    private func write(directory index: UInt32, fd: Int32, path: String, sources: [OpenFile],
                       firstPath: inout [UInt32: String], asRoot: Bool) throws {
        guard let dir = tree.inode(index) else { return }
        for child in dir.children {
            guard let node = tree.inode(child.inode) else { continue }
            let childPath = path + "/" + child.name
            if node.kind != .directory, let existing = firstPath[child.inode] {
                if linkat(AT_FDCWD, existing, fd, child.name, 0) != 0 { throw SystemError("link", childPath) }
                continue
            }
            switch node.kind {
            case .directory:
                if mkdirat(fd, child.name, 0o700) != 0 { throw SystemError("mkdir", childPath) }
                let childFD = try retryingEINTR("open", childPath) { openat(fd, child.name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
                defer { close(childFD) }
                try write(directory: child.inode, fd: childFD, path: childPath, sources: sources, firstPath: &firstPath, asRoot: asRoot)
                try finish(fd: childFD, node: node, path: childPath, asRoot: asRoot)
            case .regular:
                let file = try retryingEINTR("create", childPath) {
                    openat(fd, child.name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
                }
                defer { close(file) }
                if node.size > 0 {
                    guard node.layer >= 0, Int(node.layer) < sources.count else {
                        throw Failure(path: childPath, reason: "no layer holds its content")
                    }
                    try copy(from: sources[Int(node.layer)], offset: node.dataOffset, count: node.size, to: file, path: childPath)
                }
                try finish(fd: file, node: node, path: childPath, asRoot: asRoot)
                firstPath[child.inode] = childPath
            case .symlink:
                if symlinkat(node.linkTarget, fd, child.name) != 0 { throw SystemError("symlink", childPath) }
                try finishNoFollow(dirFD: fd, name: child.name, node: node, path: childPath, asRoot: asRoot)
                firstPath[child.inode] = childPath
            case .fifo:
                if mkfifoat(fd, child.name, 0o600) != 0 { throw SystemError("mkfifo", childPath) }
                try finishNoFollow(dirFD: fd, name: child.name, node: node, path: childPath, asRoot: asRoot)
                firstPath[child.inode] = childPath
            case .charDevice, .blockDevice, .socket, .hardlink, .whiteout, .opaque:
                onSkip(childPath, node.kind)
            }
        }
    }

    private func copy(from source: OpenFile, offset: Int64, count: Int64, to fd: Int32, path: String) throws {
        var done: Int64 = 0
        while done < count {
            let n = imgvol_copy_file_range(source.fd, offset + done, fd, done, Int(min(count - done, 1 << 30)))
            if n > 0 { done += n; continue }
            if n == 0 { throw Failure(path: path, reason: "layer data ends early") }
            if errno == EINTR { continue }
            if errno == EXDEV || errno == ENOSYS || errno == EINVAL || errno == EOPNOTSUPP {
                try copyByReading(from: source, offset: offset + done, count: count - done, to: fd, at: done, path: path)
                return
            }
            throw SystemError("copy_file_range", path)
        }
    }

    private func copyByReading(from source: OpenFile, offset: Int64, count: Int64, to fd: Int32, at start: Int64, path: String) throws {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 16)
        defer { buffer.deallocate() }
        var done: Int64 = 0
        while done < count {
            let chunk = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<Int(min(Int64(buffer.count), count - done))])
            let n = try source.read(into: chunk, at: offset + done)
            guard n > 0, let base = chunk.baseAddress else { throw Failure(path: path, reason: "layer data ends early") }
            var written = 0
            while written < n {
                let w = try retryingEINTR("write", path) { pwrite(fd, base + written, n - written, off_t(start + done) + off_t(written)) }
                written += w
            }
            done += Int64(n)
        }
    }

    /// Owner before mode (chown clears setuid), xattrs, then times last.
    private func finish(fd: Int32, node: ImageTree.Inode, path: String, asRoot: Bool) throws {
        if asRoot, fchown(fd, node.uid, node.gid) != 0 { throw SystemError("chown", path) }
        if fchmod(fd, mode_t(node.mode & 0o7777)) != 0 { throw SystemError("chmod", path) }
        for x in node.xattrs {
            let r = x.value.withUnsafeBytes { fsetxattr(fd, x.name, $0.baseAddress, $0.count, 0) }
            if r != 0 && (asRoot || !x.name.hasPrefix("trusted.")) && errno != ENOTSUP { throw SystemError("setxattr \(x.name)", path) }
        }
        var times = [timespec(tv_sec: Int(node.mtimeSeconds), tv_nsec: Int(node.mtimeNanoseconds)),
                     timespec(tv_sec: Int(node.mtimeSeconds), tv_nsec: Int(node.mtimeNanoseconds))]
        if futimens(fd, &times) != 0 { throw SystemError("utimens", path) }
    }

    private func finishNoFollow(dirFD: Int32, name: String, node: ImageTree.Inode, path: String, asRoot: Bool) throws {
        if asRoot, fchownat(dirFD, name, node.uid, node.gid, AT_SYMLINK_NOFOLLOW) != 0 { throw SystemError("lchown", path) }
        if node.kind != .symlink, fchmodat(dirFD, name, mode_t(node.mode & 0o7777), 0) != 0 { throw SystemError("chmod", path) }
        var times = [timespec(tv_sec: Int(node.mtimeSeconds), tv_nsec: Int(node.mtimeNanoseconds)),
                     timespec(tv_sec: Int(node.mtimeSeconds), tv_nsec: Int(node.mtimeNanoseconds))]
        if utimensat(dirFD, name, &times, AT_SYMLINK_NOFOLLOW) != 0 { throw SystemError("utimens", path) }
    }
}
