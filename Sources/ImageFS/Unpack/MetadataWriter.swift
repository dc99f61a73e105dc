import CLinux
import FileIO
import Layers
#if canImport(Glibc)
import Glibc
#endif

/// Gives an unpacked entry the owner, mode, xattrs and times the image records for it.
struct MetadataWriter: Sendable {
    /// Only root may give files away; others keep their own uid/gid.
    let asRoot: Bool

    /// Through an open descriptor (files, directories). Owner before mode (chown clears
    /// setuid), xattrs, then times last.
    func apply(_ node: ImageTree.Inode, to fd: Int32, path: String) throws {
        if asRoot, fchown(fd, node.uid, node.gid) != 0 { throw SystemError("chown", path) }
        if fchmod(fd, mode_t(node.mode & 0o7777)) != 0 { throw SystemError("chmod", path) }
        for x in node.xattrs {
            let r = x.value.withUnsafeBytes { fsetxattr(fd, x.name, $0.baseAddress, $0.count, 0) }
            if r != 0 && (asRoot || !x.name.hasPrefix("trusted.")) && errno != ENOTSUP { throw SystemError("setxattr \(x.name)", path) }
        }
        var times = Self.times(node)
        if futimens(fd, &times) != 0 { throw SystemError("utimens", path) }
    }

    /// By name, never following it (symlinks, fifos: opening a fifo would block).
    func apply(_ node: ImageTree.Inode, in dirFD: Int32, name: String, path: String) throws {
        if asRoot, fchownat(dirFD, name, node.uid, node.gid, AT_SYMLINK_NOFOLLOW) != 0 { throw SystemError("lchown", path) }
        if node.kind != .symlink, fchmodat(dirFD, name, mode_t(node.mode & 0o7777), 0) != 0 { throw SystemError("chmod", path) }
        var times = Self.times(node)
        if utimensat(dirFD, name, &times, AT_SYMLINK_NOFOLLOW) != 0 { throw SystemError("utimens", path) }
    }

    private static func times(_ node: ImageTree.Inode) -> [timespec] {
        let t = timespec(tv_sec: Int(node.mtimeSeconds), tv_nsec: Int(node.mtimeNanoseconds))
        return [t, t]
    }
}
