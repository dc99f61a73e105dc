import CLinux
import FileIO
import Layers
#if canImport(Glibc)
import Glibc
#endif

/// Gives an unpacked entry the owner, mode, xattrs and times the image records for it.
///
/// A file created with its final permission bits, by the owner the image gives it, needs no
/// chown or chmod: for 21,000 small files those were two of seven system calls each, and
/// each dirtied the inode once more.
struct MetadataWriter: Sendable {
    /// Only root may give files away; others keep their own uid/gid.
    let asRoot: Bool
    /// Who owns what this process creates (in a directory without the setgid bit).
    let processUID: uid_t
    let processGID: gid_t
    /// Bits the process umask takes off at creation; nil if unknown (chmod always).
    let umask: mode_t?

    init(asRoot: Bool) {
        self.asRoot = asRoot
        processUID = geteuid()
        processGID = getegid()
        umask = Self.currentUmask()
    }

    /// How an entry was created, so that what already matches is not set again.
    struct Creation {
        let mode: mode_t
        /// The entry belongs to the process's euid/egid: its directory had no setgid bit.
        let ownedByProcess: Bool
    }

    /// The permission bits to create `node` with. Never setuid, setgid or sticky: those come
    /// from fchmod, after chown (which clears them).
    static func creationMode(_ node: ImageTree.Inode) -> mode_t { mode_t(node.mode & 0o777) }

    /// Through an open descriptor (files, directories). Owner before mode (chown clears
    /// setuid), xattrs, then times last.
    func apply(_ node: ImageTree.Inode, to fd: Int32, path: String, created: Creation? = nil) throws {
        let ownerMatches = created?.ownedByProcess == true && node.uid == processUID && node.gid == processGID
        let chown = asRoot && !ownerMatches
        if chown, fchown(fd, node.uid, node.gid) != 0 { throw SystemError("chown", path) }
        let mode = mode_t(node.mode & 0o7777)
        let modeMatches = created.map { created in umask.map { created.mode & ~$0 == mode } ?? false } ?? false
        if chown || !modeMatches, fchmod(fd, mode) != 0 { throw SystemError("chmod", path) }
        for x in node.xattrs {
            let error = failure { x.value.withUnsafeBytes { fsetxattr(fd, x.name, $0.baseAddress, $0.count, 0) } }
            if let error, asRoot || !x.name.hasPrefix("trusted."), error != ENOTSUP { throw SystemError("setxattr \(x.name)", path, errno: error) }
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

    /// From /proc/self/status: calling umask() to read it would change it for every thread.
    private static func currentUmask() -> mode_t? {
        guard let bytes = try? FileSystem.readFile("/proc/self/status") else { return nil }
        for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") where line.hasPrefix("Umask:") {
            return mode_t(String(line.dropFirst("Umask:".count).filter { !$0.isWhitespace }), radix: 8)
        }
        return nil
    }

    private static func times(_ node: ImageTree.Inode) -> [timespec] {
        let t = timespec(tv_sec: Int(node.mtimeSeconds), tv_nsec: Int(node.mtimeNanoseconds))
        return [t, t]
    }
}
