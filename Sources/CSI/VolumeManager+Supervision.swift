import FileIO
import Foundation
import Mounts
#if canImport(Glibc)
import Glibc
#endif

/// While the plugin runs, every published volume is watched: a mount's keeper restarts its
/// server by itself, but when everything holding the mount's descriptor dies (the keeper and
/// the server, e.g. killed together) the mount is dead, and it is served again at once, as a
/// restart of the plugin would (`restore`). And on the plugin's start, a mount whose keeper
/// runs an older binary than the plugin's is moved to this one (an upgrade in place).
extension VolumeManager {
    /// Watches the volume's keeper (or, without one, its server) until it exits, then looks
    /// at the mount under the volume's lock.
    func supervise(_ volume: PublishedVolume) {
        guard let record = MountTable(store: store).record(for: volume.targetPath) else { return }
        let holder = record.keeper ?? record.pid
        Task { [self] in
            await watch.exited(holder)
            await locks.acquire(volume.volumeID)
            await holderExited(volume, holder: holder)
            await locks.release(volume.volumeID)
        }
    }

    private func holderExited(_ volume: PublishedVolume, holder: Int32) async {
        // Unpublished, or published anew, meanwhile: another watch owns it now.
        guard let current = await table.get(volume.key), current == volume,
              let record = MountTable(store: store).record(for: volume.targetPath),
              (record.keeper ?? record.pid) == holder else { return }
        if case .serving = probe.health(of: volume.targetPath) {
            // The keeper died, its server still serves (and holds the descriptor): watch the server.
            logger.warning("volume \(volume.volumeID): the keeper of \(volume.targetPath) exited; its server \(record.pid) serves on without one")
            var served = record
            served.keeper = nil
            do { try MountTable(store: store).write(served) } catch { logger.error("\(error)") }
            supervise(volume)
            return
        }
        logger.warning("volume \(volume.volumeID): everything serving \(volume.targetPath) died (keeper \(holder)); serving it again")
        await restore(volume)
    }

    /// Restarts the mount's server from this plugin's binary when its keeper runs another
    /// (the binary was replaced since, or the keeper was started by an older plugin).
    func upgradeIfStale(_ record: MountRecord, volume: PublishedVolume) async {
        guard let keeper = record.keeper, Self.runsOtherBinary(keeper) else { return }
        logger.notice("volume \(volume.volumeID): the mount at \(volume.targetPath) runs an older imgvol; restarting its server from this one")
        do {
            let server = try await MountTable(store: store).restart(record, keeper: keeper, within: .seconds(60))
            logger.notice("volume \(volume.volumeID): server \(record.pid) replaced by \(server)")
        } catch {
            logger.error("volume \(volume.volumeID): \(error)")
        }
    }

    /// Compares the files behind /proc/PID/exe and /proc/self/exe (a replaced binary is a new
    /// file; the old one lives on, deleted, as long as it runs).
    static func runsOtherBinary(_ pid: Int32) -> Bool {
        var theirs = stat(), ours = stat()
        guard stat("/proc/\(pid)/exe", &theirs) == 0, stat("/proc/self/exe", &ours) == 0 else { return false }
        return theirs.st_dev != ours.st_dev || theirs.st_ino != ours.st_ino
    }
}
