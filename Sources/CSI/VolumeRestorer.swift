import FileIO
import Foundation
import Mounts
import OCI
#if canImport(Glibc)
import Glibc
#endif

/// Brings published volumes back after the plugin restarts (upgrade, crash, node reboot).
///
/// A plugin restart must not break running pods: their mounts are served by `imgvol __serve`
/// processes in their own sessions, which outlive the plugin, so a mount whose server still
/// answers is kept as it is. A mount whose server died (the kernel still lists it but every
/// access fails with ENOTCONN, or nothing is mounted after a reboot) is lazily detached and
/// served again from the cached image with the same digest, so the pod sees the same files at
/// the same path without kubelet doing anything. Nothing is pulled unless the image is gone
/// from the cache. Until a volume is restored, calls for it wait on its lock.
extension VolumeManager {
    /// Takes every persisted volume's lock, then restores in the background; returns once
    /// the locks are held, so the server can start answering other calls at once.
    @discardableResult
    func restore() async -> Task<Void, Never> {
        let byVolume = Dictionary(grouping: await table.all, by: \.volumeID)
        for id in byVolume.keys { await locks.acquire(id) }
        metrics.setVolumes(await table.all)
        return Task {
            await withTaskGroup(of: Void.self) { group in
                for (id, volumes) in byVolume {
                    group.addTask {
                        for volume in volumes { await self.restore(volume) }
                        await self.locks.release(id)
                    }
                }
            }
            self.metrics.setVolumes(await self.table.all)
        }
    }

    func restore(_ volume: PublishedVolume) async {
        let target = volume.targetPath
        switch probe.health(of: target) {
        case .serving(let record):
            logger.info("volume \(volume.volumeID): \(target) is still served by pid \(record.pid); keeping it")
            await upgradeIfStale(record, volume: volume)
            supervise(volume)
            return
        case .dead(let fstype) where fstype == "fuse.imgvol":
            logger.notice("volume \(volume.volumeID): the server of \(target) died; detaching the dead mount")
            do { try MountProbe.detach(target) } catch {
                logger.error("volume \(volume.volumeID): cannot detach the dead mount at \(target): \(error)")
                return
            }
        case .dead(let fstype):
            logger.error("volume \(volume.volumeID): \(target) has a \(fstype) mount imgvol did not make; leaving it")
            return
        case .absent:
            // The pod's directory is gone: kubelet cleaned the pod up while the plugin was down.
            guard FileSystem.isDirectory(FileSystem.parent(of: target)) else {
                logger.notice("volume \(volume.volumeID): \(target) no longer exists; forgetting it")
                try? await table.remove(volume.key)
                return
            }
        }
        MountTable(store: store).remove(target)
        do {
            try FileSystem.makeDirectories(target, mode: 0o750)
            let record = try await images.restoreImage(for: volume)
            let reference = try Reference(volume.image)
            _ = try await launcher.launch(reference: reference, digest: record.digest, mountpoint: target, subpath: volume.subPath)
            if record.digest != volume.digest {
                var updated = volume
                updated.digest = record.digest
                try await table.put(updated)
            }
            logger.notice("volume \(volume.volumeID): serving \(volume.image) (\(record.digest)) at \(target) again")
            metrics.volumeRestored()
            supervise(volume)
        } catch {
            logger.error("volume \(volume.volumeID): cannot serve \(volume.image) at \(target) again: \(CSIError(error).message)")
        }
    }
}
