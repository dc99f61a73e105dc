import FileIO
import Foundation
import ImageFS
import Integrity
import Layers
import Logging
import OCI
import Pull
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

    public let store: ContentStore
    public let logger: Logger
    /// Told once the mount answers (the kernel's handshake is done and the record written):
    /// a background server tells whoever launched it through its readiness pipe.
    public var onReady: @Sendable () -> Void = {}

    public init(store: ContentStore, logger: Logger) {
        self.store = store
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

    /// What one mount serves: the tree, each layer's bytes, and for a lazy mount the gates
    /// reads wait on.
    struct Content: Sendable {
        var digest: Digest
        var tree: ImageTree
        var layers: [LayerData]
        var gates: [(any LayerGate)?] = []
        /// What names each layer's bytes in the store (diff_id, or a raw file's digest), for
        /// damage reports.
        var names: [Digest]

        init(record: ImageRecord, tree: ImageTree, layers: [LayerData], gates: [(any LayerGate)?] = []) {
            digest = record.digest
            self.tree = tree
            self.layers = layers
            self.gates = gates
            names = record.layers.map { $0.file == nil ? $0.diffID : $0.digest }
        }
    }

    /// How a server reaches its mount: it mounts in this process (the foreground), or it is
    /// handed the mount a keeper holds (`MountKeeper`), perhaps to take it over from a server
    /// that died.
    public enum Attachment: Sendable {
        case mountHere
        case kept(KeptMount)
    }

    /// Mounts (or serves a kept mount), records, serves; returns after a clean unmount.
    public func serve(record: ImageRecord, reference: String, mountpoint: String, subpath: String?,
                      attachment: Attachment = .mountHere) throws {
        let started = ContinuousClock.now
        let trees = ImageTrees(store: store, logger: logger)
        let tree = try trees.tree(of: record)
        logger.debug("tree of \(reference): \(tree.inodes.count) inodes in \(ContinuousClock.now - started)")
        try serve(Content(record: record, tree: tree, layers: try trees.layerData(of: record)),
                  reference: reference, mountpoint: mountpoint, subpath: subpath, attachment: attachment)
    }

    /// The mount record is written when the kernel's handshake completes (or, taking over,
    /// when the handshake is replayed), so whoever waits for it knows the mount answers.
    /// `onSession` gets the session before it serves (a lazy mount invalidates pages through it).
    func serve(_ content: Content, reference: String, mountpoint: String, subpath: String?, attachment: Attachment,
               onSession: (FuseSession) -> Void = { _ in }) throws {
        let root = try Self.subpathRoot(subpath, in: content.tree, reference: reference)
        let table = MountTable(store: store)
        let kept: KeptMount? = if case .kept(let kept) = attachment { kept } else { nil }
        if let previous = kept?.session, previous.digest != content.digest {
            throw Failure("cannot take over the mount at \(mountpoint): it serves \(previous.digest), not \(content.digest)")
        }
        let entry = MountRecord(mountpoint: mountpoint, reference: reference, digest: content.digest, pid: getpid(),
                                subpath: subpath, started: UTCTimestamp.now(), keeper: kept?.keeper, restarts: kept?.restarts)
        let logger = self.logger
        let onReady = self.onReady
        let digest = content.digest
        let passthrough = ProcessInfo.processInfo.environment["IMGVOL_FUSE_PASSTHROUGH"] != "0"
        let store = self.store
        let names = content.names
        let onDamage: @Sendable (Int32, ChunkDamage) -> Void = { layer, damage in
            let name = Int(layer) < names.count ? names[Int(layer)] : digest
            logger.critical("STORED CONTENT DAMAGED: \(damage) (layer \(name) of \(reference)). Reads of the files it holds fail with EIO; run `imgvol check --repair` to fetch it again")
            do {
                try store.report(ContentStore.DamageReport(digest: name, path: damage.path, offset: damage.offset,
                                                           problem: damage.problem, image: digest))
            } catch { logger.error("\(error)") }
        }
        // Only a kept mount can have a successor.
        let persist: @Sendable (FuseSessionState) -> Void = { state in
            guard kept != nil else { return }
            do { try table.writeSession(MountSession(digest: digest, fuse: state), for: mountpoint) } catch {
                logger.error("cannot save the mount's session (a server restarted after this one could not take it over): \(error)")
            }
        }
        let filesystem = FuseFilesystem(tree: content.tree, layers: content.layers, gates: content.gates, subpathRoot: root,
                                        passthrough: passthrough, logger: logger, restored: kept?.session?.fuse,
                                        persist: persist, onDamage: onDamage) {
            do { try table.write(entry) } catch { logger.error("cannot record the mount: \(error)") }
            logger.notice("serving \(reference) (\(digest)) at \(mountpoint)\(kept?.session != nil ? ", taken over after \(entry.restarts ?? 0) server restart(s)" : "")")
            onReady()
        }
        let session: FuseSession
        if let kept {
            session = try FuseSession(filesystem: filesystem, adopting: kept.fd, mountpoint: mountpoint)
        } else {
            session = try FuseSession(filesystem: filesystem, mountpoint: mountpoint, source: "imgvol:\(reference)")
        }
        onSession(session)
        if kept?.session != nil {
            switch try session.takeOver() {
            case .resent:
                logger.info("asked the kernel to resend the requests the previous server had not answered")
            case .resendUnsupported:
                logger.warning("this kernel cannot resend requests (FUSE_NOTIFY_RESEND, Linux 6.9): the calls the previous server was answering when it died wait for good; everything else is served")
            case .resendFailed(let error):
                logger.warning("asking the kernel to resend pending requests failed (\(SystemError("write", "/dev/fuse", errno: error))); the calls the previous server was answering wait for good")
            }
        }
        let status = session.serve()
        if kept != nil, session.isConnected {
            // The mount lives on in its keeper: the next server takes it over from here.
            throw Failure("the server of \(mountpoint) stopped serving (loop ended with \(status)) while the mount lives; its keeper starts another")
        }
        session.unmount()
        table.remove(mountpoint)
        logger.notice("unmounted \(mountpoint) (loop ended with \(status))")
    }

    /// Serves a lazy pull: the FUSE loop on its own thread while the blobs arrive; a blob that
    /// fails verification has its files' cached pages dropped so that reads reach the server
    /// and fail. Returns when unmounted; what had not arrived by then is deleted.
    public func serve(_ lazy: LazyPull, reference: String, mountpoint: String, subpath: String?,
                      attachment: Attachment = .mountHere) async throws {
        let sessions = SessionSlot()
        let content = Content(record: lazy.record, tree: lazy.tree, layers: lazy.layers, gates: lazy.gates)
        let serving = BlockingThreads.task { [self] in
            try serve(content, reference: reference, mountpoint: mountpoint, subpath: subpath, attachment: attachment) { sessions.set($0) }
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

/// A mount a keeper holds, as its server sees it.
public struct KeptMount: Sendable {
    /// The mount's /dev/fuse descriptor, handed down by the keeper.
    public var fd: Int32
    public var keeper: Int32
    /// Servers before this one.
    public var restarts: Int
    /// What the previous server left (nil: this server is the mount's first).
    public var session: MountSession?

    public init(fd: Int32, keeper: Int32, restarts: Int, session: MountSession?) {
        self.fd = fd
        self.keeper = keeper
        self.restarts = restarts
        self.session = session
    }
}

/// The session a lazy mount's background work reaches the kernel through, once it exists.
/// The session is used from two threads by design (libfuse's notify calls are safe beside its
/// own loop). Unchecked: `session` is touched only with `lock` held.
private final class SessionSlot: @unchecked Sendable {
    private let lock = NSLock()
    private var session: FuseSession?

    func set(_ session: FuseSession) {
        lock.withLock { self.session = session }
    }

    func invalidate(layer: Int32) {
        lock.withLock { session?.invalidate(layer: layer) }
    }
}
