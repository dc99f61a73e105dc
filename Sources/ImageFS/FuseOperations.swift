import CFuse
import CFuseProtocol
import CLinux
import Layers
#if canImport(Glibc)
import Glibc
#endif

/// The libfuse low-level operations table. Built in a nonisolated function (a closure written
/// in `main.swift` would be MainActor-isolated and trap when libfuse calls it from its own
/// threads). One function per operation; each replies exactly once.
enum FuseOperations {
    static func table() -> fuse_lowlevel_ops {
        var ops = fuse_lowlevel_ops()
        ops.`init` = { data, conn in
            if let conn { imgvol_want_capabilities(conn) }
            if let data { Unmanaged<FuseFilesystem>.fromOpaque(data).takeUnretainedValue().initialised() }
        }
        ops.lookup = { req, parent, name in FuseOperations.lookup(req, parent, name) }
        ops.getattr = { req, ino, _ in FuseOperations.getattr(req, ino) }
        ops.readlink = { req, ino in FuseOperations.readlink(req, ino) }
        ops.open = { req, ino, fi in FuseOperations.open(req, ino, fi) }
        ops.read = { req, ino, size, offset, _ in FuseOperations.read(req, ino, size, offset) }
        ops.release = { req, ino, fi in FuseOperations.release(req, ino, fi) }
        ops.opendir = { req, ino, fi in FuseOperations.opendir(req, ino, fi) }
        ops.readdir = { req, ino, size, offset, _ in FuseOperations.readdir(req, ino, size, offset, plus: false) }
        ops.readdirplus = { req, ino, size, offset, _ in FuseOperations.readdir(req, ino, size, offset, plus: true) }
        ops.releasedir = { req, _, _ in fuse_reply_err(req, 0) }
        ops.statfs = { req, _ in FuseOperations.statfs(req) }
        ops.getxattr = { req, ino, name, size in FuseOperations.getxattr(req, ino, name, size) }
        ops.listxattr = { req, ino, size in FuseOperations.listxattr(req, ino, size) }
        ops.access = { req, ino, mask in FuseOperations.access(req, ino, mask) }
        ops.flush = { req, _, _ in fuse_reply_err(req, 0) }
        ops.forget = { req, _, _ in fuse_reply_none(req) }
        ops.forget_multi = { req, _, _ in fuse_reply_none(req) }

        // Every write-side operation: read-only file system.
        ops.setattr = { req, _, _, _, _ in fuse_reply_err(req, EROFS) }
        ops.mknod = { req, _, _, _, _ in fuse_reply_err(req, EROFS) }
        ops.mkdir = { req, _, _, _ in fuse_reply_err(req, EROFS) }
        ops.unlink = { req, _, _ in fuse_reply_err(req, EROFS) }
        ops.rmdir = { req, _, _ in fuse_reply_err(req, EROFS) }
        ops.symlink = { req, _, _, _ in fuse_reply_err(req, EROFS) }
        ops.rename = { req, _, _, _, _, _ in fuse_reply_err(req, EROFS) }
        ops.link = { req, _, _, _ in fuse_reply_err(req, EROFS) }
        ops.write = { req, _, _, _, _, _ in fuse_reply_err(req, EROFS) }
        ops.write_buf = { req, _, _, _, _ in fuse_reply_err(req, EROFS) }
        ops.create = { req, _, _, _, _ in fuse_reply_err(req, EROFS) }
        ops.setxattr = { req, _, _, _, _, _ in fuse_reply_err(req, EROFS) }
        ops.removexattr = { req, _, _ in fuse_reply_err(req, EROFS) }
        ops.fallocate = { req, _, _, _, _, _ in fuse_reply_err(req, EROFS) }
        ops.copy_file_range = { req, _, _, _, _, _, _, _, _ in fuse_reply_err(req, EROFS) }
        return ops
    }

    static func filesystem(_ req: fuse_req_t?) -> FuseFilesystem? {
        guard let data = fuse_req_userdata(req) else { return nil }
        return Unmanaged<FuseFilesystem>.fromOpaque(data).takeUnretainedValue()
    }

    static func lookup(_ req: fuse_req_t?, _ parent: fuse_ino_t, _ name: UnsafePointer<CChar>?) {
        guard let fs = filesystem(req), let name, let dir = fs.index(parent), let node = fs.tree.inode(dir) else {
            fuse_reply_err(req, ENOENT); return
        }
        guard node.kind == .directory else { fuse_reply_err(req, ENOTDIR); return }
        let text = String(cString: name)
        let found: UInt32?
        switch text {
        case ".": found = dir
        case "..": found = fs.parent(of: dir)
        default: found = fs.tree.lookup(dir, text)
        }
        guard let found else {
            // A negative entry with a timeout: the kernel caches the miss too.
            var e = fuse_entry_param()
            e.entry_timeout = fs.timeout
            fuse_reply_entry(req, &e)
            return
        }
        var e = fs.entry(for: found)
        fuse_reply_entry(req, &e)
    }

    static func getattr(_ req: fuse_req_t?, _ ino: fuse_ino_t) {
        guard let fs = filesystem(req), let index = fs.index(ino) else { fuse_reply_err(req, ENOENT); return }
        var st = fs.stat(of: index)
        fuse_reply_attr(req, &st, fs.timeout)
    }

    static func readlink(_ req: fuse_req_t?, _ ino: fuse_ino_t) {
        guard let fs = filesystem(req), let index = fs.index(ino), let node = fs.tree.inode(index) else {
            fuse_reply_err(req, ENOENT); return
        }
        guard node.kind == .symlink else { fuse_reply_err(req, EINVAL); return }
        fuse_reply_readlink(req, node.linkTarget)
    }

    static func open(_ req: fuse_req_t?, _ ino: fuse_ino_t, _ fi: UnsafeMutablePointer<fuse_file_info>?) {
        guard let fs = filesystem(req), let index = fs.index(ino), let node = fs.tree.inode(index), let fi else {
            fuse_reply_err(req, ENOENT); return
        }
        let flags = imgvol_open_flags(fi)
        if flags & O_ACCMODE != O_RDONLY || flags & O_TRUNC != 0 { fuse_reply_err(req, EROFS); return }
        if node.kind == .directory { fuse_reply_err(req, EISDIR); return }
        // Opened once for the mount's life. Its descriptor is not put in the file handle: a
        // server that takes the session over has descriptors of its own.
        if node.storedApart, fs.apartFile(index, node) == nil { fuse_reply_err(req, EIO); return }
        guard fs.checkBeforePassthrough(index, node) else { fuse_reply_err(req, EIO); return }
        guard let backing = fs.openBacking(for: index, node) else {
            imgvol_set_keep_cache(fi)
            fuse_reply_open(req, fi)
            return
        }
        // The kernel refuses FOPEN_KEEP_CACHE with passthrough (the backing file has its own
        // cache). The reply is written on this thread, inside fuse_reply_open. No read of
        // this open reaches the server; its handle only tells `release` what it was.
        imgvol_set_file_handle(fi, passthroughHandle)
        imgvol_set_noflush(fi)
        imgvol_fuse_set_open_backing(backing)
        fuse_reply_open(req, fi)
        imgvol_fuse_set_open_backing(0)
    }

    /// The file handle of an open that passes through to its backing file.
    static let passthroughHandle: UInt64 = 1 << 63

    static func release(_ req: fuse_req_t?, _ ino: fuse_ino_t, _ fi: UnsafeMutablePointer<fuse_file_info>?) {
        if let fs = filesystem(req), let index = fs.index(ino), let fi, imgvol_file_handle(fi) != passthroughHandle {
            fs.released(index)
        }
        fuse_reply_err(req, 0)
    }

    static func read(_ req: fuse_req_t?, _ ino: fuse_ino_t, _ size: Int, _ offset: off_t) {
        guard let fs = filesystem(req), let index = fs.index(ino), let node = fs.tree.inode(index) else {
            fuse_reply_err(req, ENOENT); return
        }
        guard node.kind == .regular else { fuse_reply_err(req, EINVAL); return }
        let start = Int64(offset)
        guard start < node.size, size > 0 else { fuse_reply_buf(req, nil, 0); return }
        let length = Int(min(Int64(size), node.size - start))
        if node.storedApart {
            // A file stored apart is its own file, from offset 0.
            guard let served = fs.apartFile(index, node), fs.verify(index, node, offset: start, length: length) else {
                fuse_reply_err(req, EIO); return
            }
            imgvol_reply_fd(req, served.file.fd, off_t(start), length)
            return
        }
        guard node.layer >= 0, Int(node.layer) < fs.layerFDs.count else { fuse_reply_err(req, EIO); return }
        if let gate = fs.gate(node.layer), !gate.waitFor(offset: node.dataOffset + start, length: length) {
            fuse_reply_err(req, EIO)
            return
        }
        guard fs.verify(index, node, offset: start, length: length) else { fuse_reply_err(req, EIO); return }
        imgvol_reply_fd(req, fs.layerFDs[Int(node.layer)], off_t(node.dataOffset + start), length)
    }

    static func opendir(_ req: fuse_req_t?, _ ino: fuse_ino_t, _ fi: UnsafeMutablePointer<fuse_file_info>?) {
        guard let fs = filesystem(req), let index = fs.index(ino), let node = fs.tree.inode(index), let fi else {
            fuse_reply_err(req, ENOENT); return
        }
        guard node.kind == .directory else { fuse_reply_err(req, ENOTDIR); return }
        imgvol_set_cache_readdir(fi)
        fuse_reply_open(req, fi)
    }

    /// Offsets: 1 is after ".", 2 after "..", 2 + k after the k-th child.
    static func readdir(_ req: fuse_req_t?, _ ino: fuse_ino_t, _ size: Int, _ offset: off_t, plus: Bool) {
        guard let fs = filesystem(req), let index = fs.index(ino), let node = fs.tree.inode(index) else {
            fuse_reply_err(req, ENOENT); return
        }
        guard node.kind == .directory else { fuse_reply_err(req, ENOTDIR); return }
        let buffer = UnsafeMutablePointer<CChar>.allocate(capacity: size)
        defer { buffer.deallocate() }
        var used = 0
        var position = Int(offset)
        let total = node.children.count + 2
        while position < total {
            let (name, target): (String, UInt32) = switch position {
            case 0: (".", index)
            case 1: ("..", fs.parent(of: index))
            default: (node.children[position - 2].name, node.children[position - 2].inode)
            }
            let next = off_t(position + 1)
            let needed: Int
            if plus {
                var e = fs.entry(for: target)
                if position < 2 { e = fuse_entry_param(); e.attr = fs.stat(of: target) }
                needed = fuse_add_direntry_plus(req, buffer + used, size - used, name, &e, next)
            } else {
                var st = fs.stat(of: target)
                needed = fuse_add_direntry(req, buffer + used, size - used, name, &st, next)
            }
            if needed > size - used { break }
            used += needed
            position += 1
        }
        fuse_reply_buf(req, buffer, used)
    }

    static func statfs(_ req: fuse_req_t?) {
        guard let fs = filesystem(req) else { fuse_reply_err(req, EIO); return }
        var st = statvfs()
        st.f_bsize = 4096
        st.f_frsize = 4096
        st.f_blocks = fsblkcnt_t(fs.tree.totalSize / 4096 + (fs.tree.totalSize % 4096 == 0 ? 0 : 1))
        st.f_files = fsfilcnt_t(fs.tree.inodes.count)
        st.f_namemax = 255
        fuse_reply_statfs(req, &st)
    }

    static func getxattr(_ req: fuse_req_t?, _ ino: fuse_ino_t, _ name: UnsafePointer<CChar>?, _ size: Int) {
        guard let fs = filesystem(req), let index = fs.index(ino), let node = fs.tree.inode(index), let name else {
            fuse_reply_err(req, ENOENT); return
        }
        let key = String(cString: name)
        guard let x = node.xattrs.first(where: { $0.name == key }) else { fuse_reply_err(req, ENODATA); return }
        if size == 0 { fuse_reply_xattr(req, x.value.count); return }
        guard size >= x.value.count else { fuse_reply_err(req, ERANGE); return }
        x.value.withUnsafeBytes { _ = fuse_reply_buf(req, $0.baseAddress?.assumingMemoryBound(to: CChar.self), $0.count) }
    }

    static func listxattr(_ req: fuse_req_t?, _ ino: fuse_ino_t, _ size: Int) {
        guard let fs = filesystem(req), let index = fs.index(ino), let node = fs.tree.inode(index) else {
            fuse_reply_err(req, ENOENT); return
        }
        var names: [UInt8] = []
        for x in node.xattrs { names += Array(x.name.utf8) + [0] }
        if size == 0 { fuse_reply_xattr(req, names.count); return }
        guard size >= names.count else { fuse_reply_err(req, ERANGE); return }
        names.withUnsafeBytes { _ = fuse_reply_buf(req, $0.baseAddress?.assumingMemoryBound(to: CChar.self), $0.count) }
    }

    /// Only reached without default_permissions; refuses writing.
    static func access(_ req: fuse_req_t?, _ ino: fuse_ino_t, _ mask: Int32) {
        guard let fs = filesystem(req), fs.index(ino) != nil else { fuse_reply_err(req, ENOENT); return }
        fuse_reply_err(req, mask & W_OK != 0 ? EROFS : 0)
    }
}
