import FileIO
import Foundation
import Store
#if canImport(Glibc)
import Glibc
#endif

/// A mountpoint resolved once (symlinks, `..`, `/proc/self`) and held for the launch: an
/// flock on the directory itself, which every imgvol process sees whatever its `--root`, so
/// two mounts onto one directory never stack.
public struct Mountpoint: Sendable {
    /// The real path, the one the kernel's mount table will show.
    public let path: String
    private let claim: OpenFile

    /// The kernel's trees: a mount there would hide what processes and devices are.
    static let systemTrees = ["/proc", "/sys", "/dev"]

    public static func claim(_ given: String, store: ContentStore) throws -> Mountpoint {
        var st = stat()
        if let error = failure(of: { lstat(given, &st) }), error == ENOTCONN {
            throw MountServer.Failure("mountpoint \(given) is a dead mount; run `imgvol unmount \(given)` first")
        }
        guard let resolved = realpath(given, nil) else {
            throw MountServer.Failure("mountpoint \(given) does not exist; create it with `mkdir -p \(given)`")
        }
        let path = String(cString: resolved)
        free(resolved)
        let shown = path == given ? given : "\(given) (\(path))"
        for tree in systemTrees where path == tree || path.hasPrefix(tree + "/") {
            throw MountServer.Failure("mountpoint \(shown) is under \(tree); mount onto a directory of your own")
        }
        let root = realpath(store.root, nil).map { pointer in defer { free(pointer) }; return String(cString: pointer) } ?? store.root
        if path == root || path.hasPrefix(root + "/") || root.hasPrefix(path + "/") {
            throw MountServer.Failure("mountpoint \(shown) would hide part of the store at \(store.root); mount onto a directory outside it")
        }
        guard FileSystem.isDirectory(path) else { throw MountServer.Failure("mountpoint \(shown) is not a directory") }
        let claim: OpenFile
        do { claim = try OpenFile(path: path, flags: O_RDONLY | O_DIRECTORY) } catch {
            throw MountServer.Failure("cannot open the mountpoint \(shown): \(error)")
        }
        guard try claim.tryLock(exclusive: true) else {
            throw MountServer.Failure("another imgvol mount onto \(shown) is in progress or serving it in the foreground")
        }
        // Checked while held: a mount that finished before the claim is seen here.
        if MountTable.isMountpoint(path) {
            throw MountServer.Failure("\(shown) is already a mount point; unmount it first (`imgvol unmount \(path)`)")
        }
        return Mountpoint(path: path, claim: claim)
    }

    /// Lets the next mount of this directory proceed (after this one is served or failed).
    public func release() { claim.close() }
}
