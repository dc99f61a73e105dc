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
public struct MountServer: Sendable {
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

    /// What one mount serves: the tree, the files holding each layer's bytes, and for a lazy
    /// mount the gates reads wait on.
    public struct Content: Sendable {
        public var digest: Digest
        public var tree: ImageTree
        public var layerFiles: [OpenFile]
        public var gates: [(any LayerGate)?] = []

        public init(digest: Digest, tree: ImageTree, layerFiles: [OpenFile], gates: [(any LayerGate)?] = []) {
            self.digest = digest
            self.tree = tree
            self.layerFiles = layerFiles
            self.gates = gates
        }
    }

    /// Mounts, records, serves; returns after a clean unmount.
    public func serve(record: ImageRecord, reference: String, mountpoint: String, subpath: String?) throws {
        let started = ContinuousClock.now
        let tree = try service.tree(of: record)
        logger.debug("tree of \(reference): \(tree.inodes.count) inodes in \(ContinuousClock.now - started)")
        let files = try service.layerFiles(of: record).map { try OpenFile.openRead($0) }
        try serve(Content(digest: record.digest, tree: tree, layerFiles: files),
                  reference: reference, mountpoint: mountpoint, subpath: subpath)
    }

    /// The mount record is written when the kernel's handshake completes, so whoever waits
    /// for it knows the mount answers. `onSession` gets the session before it serves (a lazy
    /// mount invalidates pages through it).
    public func serve(_ content: Content, reference: String, mountpoint: String, subpath: String?,
                      onSession: (FuseSession) -> Void = { _ in }) throws {
        let root = try Self.subpathRoot(subpath, in: content.tree, reference: reference)
        let table = MountTable(store: service.store)
        let entry = MountRecord(mountpoint: mountpoint, reference: reference, digest: content.digest, pid: getpid(),
                                subpath: subpath, started: UTCTimestamp.now())
        let logger = self.logger
        let digest = content.digest
        let passthrough = ProcessInfo.processInfo.environment["IMGVOL_FUSE_PASSTHROUGH"] != "0"
        let filesystem = FuseFilesystem(tree: content.tree, layerFiles: content.layerFiles, gates: content.gates, subpathRoot: root,
                                        passthrough: passthrough, logger: logger) {
            do { try table.write(entry) } catch { logger.error("cannot record the mount: \(error)") }
            logger.notice("serving \(reference) (\(digest)) at \(mountpoint)")
        }
        let session = try FuseSession(filesystem: filesystem, mountpoint: mountpoint, source: "imgvol:\(reference)")
        onSession(session)
        let status = session.serve()
        session.unmount()
        table.remove(mountpoint)
        logger.notice("unmounted \(mountpoint) (loop ended with \(status))")
    }

    /// Serves a lazy pull: the FUSE loop on its own thread while the blobs arrive; a blob that
    /// fails verification has its files' cached pages dropped so that reads reach the server
    /// and fail. Returns when unmounted; what had not arrived by then is deleted.
    public func serve(_ lazy: LazyPull, reference: String, mountpoint: String, subpath: String?) async throws {
        let sessions = SessionSlot()
        let serving = onThread { [self] in
            try serve(lazy.content, reference: reference, mountpoint: mountpoint, subpath: subpath) { sessions.set($0) }
        }
        let completion = Task { await lazy.complete { layer in sessions.invalidate(layer: layer) } }
        do { try await serving.value } catch {
            lazy.abandon()
            _ = await completion.value
            throw error
        }
        lazy.abandon()
        completion.cancel()
    }
}

/// The session a lazy mount's background work reaches the kernel through, once it exists.
/// Unchecked because the session is used from two threads by design: libfuse's notify calls
/// are safe alongside its own loop; the slot only guards handing the session over.
private final class SessionSlot: @unchecked Sendable {
    private let lock = NSLock()
    private var session: FuseSession?

    func set(_ session: FuseSession) {
        lock.lock()
        self.session = session
        lock.unlock()
    }

    func invalidate(layer: Int32) {
        lock.lock()
        defer { lock.unlock() }
        session?.invalidate(layer: layer)
    }
}
