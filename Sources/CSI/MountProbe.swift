import FileIO
import Mounts
import Store
#if canImport(Glibc)
import Glibc
#endif

/// What is at a target path, judged without `stat`: on a FUSE mount whose server died,
/// every `stat` fails with ENOTCONN (and kubelet's own checks do the same), so the mount is
/// asked with `statfs` (`statvfs`) and `opendir`, and the kernel's mount table and imgvol's mount record
/// (with a live server process) must agree.
enum MountHealth: Sendable, Equatable {
    /// Nothing is mounted there.
    case absent
    /// An imgvol server answers there.
    case serving(MountRecord)
    /// Something is mounted but no live imgvol server answers: a dead FUSE mount (ENOTCONN),
    /// a server without a record, or a mount that is not imgvol's.
    case dead(fstype: String)
}

struct MountProbe: Sendable {
    let store: ContentStore

    func health(of path: String) -> MountHealth {
        // The last entry wins: mounts stacked on one path hide the earlier ones.
        guard let mount = MountTable.kernelMounts().last(where: { $0.mountpoint == path }) else { return .absent }
        guard mount.fstype == "fuse.imgvol",
              let record = MountTable(store: store).record(for: path),
              // Between a server's death and its successor's start, its keeper alone holds it.
              MountTable.processAlive(record.pid) || record.keeper.map(MountTable.processAlive) == true,
              Self.answers(path) else { return .dead(fstype: mount.fstype) }
        return .serving(record)
    }

    /// `statfs` (through glibc's `statvfs`) and `opendir` reach the FUSE server; a dead one
    /// makes both fail with ENOTCONN.
    static func answers(_ path: String) -> Bool {
        var fs = statvfs()
        guard statvfs(path, &fs) == 0 else { return false }
        guard let dir = opendir(path) else { return false }
        closedir(dir)
        return true
    }

    /// Lazily detaches whatever is mounted at `path` (MNT_DETACH works on dead FUSE mounts and
    /// on busy ones; processes that still hold files keep them until they close them).
    static func detach(_ path: String) throws(SystemError) {
        if let error = failure(of: { umount2(path, Int32(MNT_DETACH)) }), error != EINVAL, error != ENOENT {
            throw SystemError("umount2", path, errno: error)
        }
    }
}
