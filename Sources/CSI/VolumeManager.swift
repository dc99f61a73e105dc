import FileIO
import Foundation
import ImageFS
import Mounts
import Pull
import Layers
import Logging
import OCI
import Store
#if canImport(Glibc)
import Glibc
#endif

/// Publishes and unpublishes volumes: the Node service's logic, without gRPC types.
///
/// Calls for one volume id are serialised by a keyed lock; calls for different volumes run in
/// parallel. A publish never leaves a half-made mount behind: on any failure after the target
/// was created or mounted, the mount is taken down and a directory the plugin created removed.
final class VolumeManager: Sendable {
    let store: ContentStore
    let logger: Logger
    let table: VolumeTable
    let locks = KeyedLock<String>()
    let images: ImageSource
    let launcher: MountLauncher
    let metrics: CSIMetrics
    let usage = UsageCache()
    /// Tells the supervisor when a volume's keeper exits (`supervise`).
    let watch: ProcessWatch

    init(store: ContentStore, logger: Logger, table: VolumeTable, images: ImageSource, launcher: MountLauncher, metrics: CSIMetrics,
         watch: ProcessWatch) {
        self.watch = watch
        self.store = store
        self.logger = logger
        self.table = table
        self.images = images
        self.launcher = launcher
        self.metrics = metrics
    }

    var probe: MountProbe { MountProbe(store: store) }

    // MARK: publish

    func publish(_ request: PublishRequest) async throws {
        try await locks.withLock(request.volumeID) { try await self.publishLocked(request) }
        metrics.setVolumes(await table.all)
    }

    private func publishLocked(_ request: PublishRequest) async throws {
        let target = request.targetPath
        let key = PublishedVolume.Key(volumeID: request.volumeID, targetPath: target)
        if let existing = await table.get(key) {
            guard existing.image == request.reference.description, existing.subPath == request.subPath else {
                throw CSIError.alreadyExists("volume \(request.volumeID) is already published at \(target) with image \(existing.image)\(existing.subPath.map { " (subPath \($0))" } ?? ""); unpublish it before publishing \(request.reference)")
            }
            if case .serving(let record) = probe.health(of: target), record.digest == existing.digest {
                logger.debug("volume \(request.volumeID) already serves \(existing.image) at \(target)")
                return
            }
            logger.warning("volume \(request.volumeID) at \(target): its mount server is gone; mounting \(existing.image) again")
        }
        if let other = await table.all.first(where: { $0.targetPath == target && $0.volumeID != request.volumeID }) {
            throw CSIError.alreadyExists("target \(target) is already used by volume \(other.volumeID) (image \(other.image))")
        }
        try await clearTarget(target, for: request)
        if case .serving = probe.health(of: target) { return }  // adopted a live mount

        let created = !FileSystem.isDirectory(target)
        do {
            try FileSystem.makeDirectories(target, mode: 0o750)
        } catch {
            throw CSIError.internalError("cannot create target directory \(target): \(error)")
        }
        do {
            if request.lazy, let source = try images.lazySource(for: request) {
                try await Task { [self] in try await mountLazily(request, source: source) }.value
                return
            }
            // Cancellable: when the deadline passes, the RPC stops waiting; the pull goes on.
            let record = try await images.image(for: request)
            // Not cancellable: a mount server half-started by a cancelled call would be a mount
            // nobody records. This part is bounded (the launcher gives up after 60 s).
            try await Task { [self] in try await mount(record, request: request) }.value
        } catch {
            if created { rmdir(target) }
            throw error
        }
    }

    /// Makes `target` ready for a fresh mount: a dead imgvol mount is detached; a live imgvol
    /// mount of the same image with no state (the state file was lost) is adopted; anything
    /// else mounted there is refused, never mounted over.
    private func clearTarget(_ target: String, for request: PublishRequest) async throws {
        switch probe.health(of: target) {
        case .absent:
            MountTable(store: store).remove(target)
        case .serving(let record):
            guard record.reference == request.reference.description, record.subpath == request.subPath else {
                throw CSIError.alreadyExists("target \(target) already serves image \(record.reference); unpublish it first")
            }
            logger.notice("adopting the running mount of \(record.reference) at \(target) for volume \(request.volumeID)")
            try await table.put(volume(request, digest: record.digest))
        case .dead(let fstype) where fstype == "fuse.imgvol":
            logger.notice("detaching the dead imgvol mount at \(target)")
            try MountProbe.detach(target)
            MountTable(store: store).remove(target)
        case .dead(let fstype):
            throw CSIError.failedPrecondition("target \(target) already has a \(fstype) mount that imgvol did not make; refusing to mount over it")
        }
    }

    /// Checks the subPath, starts the mount server and records the volume; undoes the mount
    /// if anything after it fails.
    private func mount(_ record: ImageRecord, request: PublishRequest) async throws {
        if let subPath = request.subPath {
            let tree = try ImageTrees(store: store, logger: logger).tree(of: record)
            guard let index = tree.resolve(subPath), let node = tree.inode(index) else {
                throw CSIError.notFound("volume \(request.volumeID): subPath \(subPath) does not exist in \(request.reference)")
            }
            guard node.kind == .directory else {
                throw CSIError.invalidArgument("volume \(request.volumeID): subPath \(subPath) in \(request.reference) is not a directory (it is a \(node.kind))")
            }
        }
        try await launchAndRecord(request) {
            try await launcher.launch(reference: request.reference, digest: record.digest, mountpoint: request.targetPath, subpath: request.subPath)
        }
    }

    /// A lazy mount: its server resolves the image and serves while the blobs arrive; the
    /// digest it resolved is what the volume records (and the log shows).
    private func mountLazily(_ request: PublishRequest, source: MountLauncher.LazySource) async throws {
        try await launchAndRecord(request, how: "lazily, blobs arriving on demand") {
            try await launcher.launch(reference: request.reference, digest: nil, mountpoint: request.targetPath,
                                      subpath: request.subPath, lazy: source)
        }
    }

    /// Starts the mount server and records the volume; undoes the mount if anything fails.
    private func launchAndRecord(_ request: PublishRequest, how: String = "",
                                 _ launch: () async throws -> MountRecord) async throws {
        let target = request.targetPath
        do {
            let mount = try await launch()
            let published = volume(request, digest: mount.digest)
            try await table.put(published)
            supervise(published)
            logger.notice("volume \(request.volumeID): serving \(request.reference) (\(mount.digest)) read-only at \(target)\(how.isEmpty ? "" : ", " + how)")
        } catch {
            if MountTable.isMountpoint(target) {
                do { try await launcher.unmount(target, force: true) } catch {
                    try? MountProbe.detach(target)
                }
            }
            MountTable(store: store).remove(target)
            throw error
        }
    }

    private func volume(_ request: PublishRequest, digest: Digest) -> PublishedVolume {
        PublishedVolume(volumeID: request.volumeID, targetPath: request.targetPath, image: request.reference.description,
                        digest: digest, subPath: request.subPath, attributes: request.attributes,
                        publishedAt: UTCTimestamp.now())
    }

    // MARK: unpublish

    /// Idempotent: an unknown volume or an unmounted target is success. Unmounts lazily (a
    /// process of the terminating pod may still hold a file), stops the server, removes the
    /// target directory if empty.
    func unpublish(volumeID: String, targetPath: String) async throws {
        let key = PublishedVolume.Key(volumeID: volumeID, targetPath: targetPath)
        try await locks.withLock(volumeID) {
            switch self.probe.health(of: targetPath) {
            case .absent:
                MountTable(store: self.store).remove(targetPath)
            case .serving:
                try await self.unmount(targetPath)
            case .dead(let fstype) where fstype == "fuse.imgvol":
                try await self.unmount(targetPath)
            case .dead(let fstype):
                throw CSIError.failedPrecondition("target \(targetPath) has a \(fstype) mount that imgvol did not make; not unmounting it")
            }
            if let error = failure(of: { rmdir(targetPath) }), error != ENOENT {
                self.logger.warning("target \(targetPath) is unmounted but was not removed: \(SystemError("rmdir", targetPath, errno: error).description)")
            }
            try await self.table.remove(key)
        }
        metrics.setVolumes(await table.all)
    }

    private func unmount(_ target: String) async throws {
        do {
            try await launcher.unmount(target, force: true)
        } catch {
            // Dead servers and odd states: a lazy detach always takes the mount away.
            logger.notice("unmount of \(target) failed (\(error)); detaching it")
            try MountProbe.detach(target)
            MountTable(store: store).remove(target)
        }
    }
}
