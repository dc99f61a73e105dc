import FileIO
import Foundation
import ImageFS
import Layers
import Logging
import OCI
import Store
#if canImport(Glibc)
import Glibc
#endif

/// Mounts one cached image and serves it until unmounted or signalled.
public struct MountServer {
    public struct Failure: Error, CustomStringConvertible {
        public let message: String
        public init(_ message: String) { self.message = message }
        public var description: String { message }
    }

    public let service: ImageService
    public let logger: Logger

    public init(service: ImageService, logger: Logger) {
        self.service = service
        self.logger = logger
    }

    /// The directory of the image tree to serve as the mount's root.
    public static func subpathRoot(_ subpath: String?, in tree: ImageTree, reference: String) throws -> UInt32 {
        guard let subpath, !subpath.isEmpty, subpath != "/" else { return ImageTree.rootIndex }
        let clean: String
        do { clean = try TarPath.normalize(subpath) } catch {
            throw Failure("--subpath \(subpath) climbs out of the image \(reference); give a path inside it")
        }
        guard let index = tree.resolve(clean), let node = tree.inode(index) else {
            throw Failure("--subpath \(subpath) does not exist in \(reference)")
        }
        guard node.kind == .directory else {
            throw Failure("--subpath \(subpath) in \(reference) is not a directory (it is a \(node.kind))")
        }
        return index
    }

    /// Checks a mountpoint before anything is pulled or spawned.
    public static func checkMountpoint(_ path: String) throws {
        var st = stat()
        if lstat(path, &st) != 0 {
            if errno == ENOTCONN {
                throw Failure("mountpoint \(path) is a dead mount; run `imgvol unmount \(path)` first")
            }
            throw Failure("mountpoint \(path) does not exist; create it with `mkdir -p \(path)`")
        }
        guard (st.st_mode & S_IFMT) == S_IFDIR else { throw Failure("mountpoint \(path) is not a directory") }
        if MountTable.isMountpoint(path) {
            throw Failure("\(path) is already a mount point; unmount it first (`imgvol unmount \(path)`)")
        }
    }

    /// Mounts, records, serves; returns after a clean unmount.
    /// The mount record is written when the kernel's handshake completes, so whoever waits
    /// for it knows the mount answers.
    public func serve(record: ImageRecord, reference: String, mountpoint: String, subpath: String?) throws {
        let started = ContinuousClock.now
        let tree = try service.tree(of: record)
        logger.debug("tree of \(reference): \(tree.inodes.count) inodes in \(ContinuousClock.now - started)")
        let root = try Self.subpathRoot(subpath, in: tree, reference: reference)
        let table = MountTable(store: service.store)
        let entry = MountRecord(mountpoint: mountpoint, reference: reference, digest: record.digest, pid: getpid(),
                                subpath: subpath, started: ISO8601DateFormatter().string(from: Date()))
        let logger = self.logger
        let filesystem = try FuseFilesystem(tree: tree, layerTars: service.layerFiles(of: record), subpathRoot: root) {
            do { try table.write(entry) } catch { logger.error("cannot record the mount: \(error)") }
            logger.notice("serving \(reference) (\(record.digest)) at \(mountpoint)")
        }
        let session = try FuseSession(filesystem: filesystem, mountpoint: mountpoint, source: "imgvol:\(reference)")
        let status = session.serve()
        session.unmount()
        table.remove(mountpoint)
        logger.notice("unmounted \(mountpoint) (loop ended with \(status))")
    }
}
