import FileIO
import ImageFS
#if canImport(Glibc)
import Glibc
#endif
import Pull
import OCI
import Synchronization

/// What a volume holds, for NodeGetVolumeStats: bytes of regular files and number of inodes
/// in the image tree (or its subPath). The volume is read-only, so "available" is zero and
/// "total" equals "used": kubelet shows the image's size and never expects it to grow.
struct VolumeUsage: Sendable, Equatable {
    var bytes: Int64
    var inodes: Int64

    init(bytes: Int64, inodes: Int64) {
        self.bytes = bytes
        self.inodes = inodes
    }

    /// Counts the subtree under `root`; hardlinks (which share an inode) count once.
    init(tree: ImageTree, root: UInt32) {
        var seen = Set<UInt32>()
        var stack = [root]
        var bytes: Int64 = 0
        while let index = stack.popLast() {
            guard seen.insert(index).inserted, let node = tree.inode(index) else { continue }
            if node.kind == .regular { bytes += node.size }
            if node.kind == .directory { stack.append(contentsOf: node.children.map(\.inode)) }
        }
        self.bytes = bytes
        self.inodes = Int64(seen.count)
    }
}

/// Usage per (digest, subPath): images are immutable, so it is computed once; kubelet asks
/// for every volume every minute, and building a big image's tree is not free.
final class UsageCache: Sendable {
    private let cache = Mutex<[String: VolumeUsage]>([:])

    func usage(digest: Digest, subPath: String?, compute: () throws -> VolumeUsage) rethrows -> VolumeUsage {
        let key = digest.description + "|" + (subPath ?? "")
        if let known = cache.withLock({ $0[key] }) { return known }
        let value = try compute()
        cache.withLock { $0[key] = value }
        return value
    }
}

extension VolumeManager {
    /// NOT_FOUND unless the volume is published at `path`.
    func usage(volumeID: String, path: String) async throws -> VolumeUsage {
        guard let volume = await table.get(PublishedVolume.Key(volumeID: volumeID, targetPath: path)) else {
            throw CSIError.notFound("volume \(volumeID) is not published at \(path) on this node")
        }
        // A lazy volume's image is not in the store until its download completes: its mount
        // knows the tree already (statfs), so kubelet gets figures, not an error.
        if !store.hasImage(volume.digest) {
            var st = statvfs()
            if let error = failure(of: { statvfs(path, &st) }) {
                throw CSIError.internalError("volume \(volumeID) at \(path): its image is still downloading and its mount does not answer statfs (\(SystemError("statvfs", path, errno: error)))")
            }
            return VolumeUsage(bytes: Int64(st.f_blocks) * Int64(st.f_frsize), inodes: Int64(st.f_files))
        }
        return try usage.usage(digest: volume.digest, subPath: volume.subPath) {
            let record = try store.readImage(volume.digest)
            let tree = try ImageTrees(store: store, logger: logger).tree(of: record)
            let root = volume.subPath.flatMap { tree.resolve($0) } ?? ImageTree.rootIndex
            return VolumeUsage(tree: tree, root: root)
        }
    }
}
